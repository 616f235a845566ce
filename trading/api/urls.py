from django.urls import path
from rest_framework.routers import SimpleRouter

from trading.api import batch, deadman, views

router = SimpleRouter(trailing_slash=False)
router.register("orders", views.OrderViewSet, basename="order")
router.register("fills", views.FillViewSet, basename="fill")

urlpatterns = [
    path("account/balances", views.BalancesView.as_view(), name="balances"),
    path("account/fees", views.FeesView.as_view(), name="fees"),
    path("orders/batch", batch.OrderBatchView.as_view(), name="order-batch"),
    path("orders/cancel", batch.OrderCancelBatchView.as_view(), name="order-cancel-batch"),
    path("orders/cancel-all-after", deadman.CancelAllAfterView.as_view(), name="order-cancel-all-after"),
    *router.urls,
]
