from django.urls import path
from rest_framework.routers import SimpleRouter

from trading.api import views

router = SimpleRouter(trailing_slash=False)
router.register("orders", views.OrderViewSet, basename="order")
router.register("fills", views.FillViewSet, basename="fill")

urlpatterns = [
    path("account/balances", views.BalancesView.as_view(), name="balances"),
    path("account/fees", views.FeesView.as_view(), name="fees"),
    *router.urls,
]
