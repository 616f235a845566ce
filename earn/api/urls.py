from rest_framework.routers import SimpleRouter

from earn.api import views

router = SimpleRouter(trailing_slash=False)
router.register("earn/products", views.EarnProductViewSet, basename="earn-product")
router.register("earn/subscriptions", views.SubscriptionViewSet, basename="earn-subscription")

urlpatterns = [*router.urls]
