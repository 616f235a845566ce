from rest_framework.routers import SimpleRouter

from wallets.api import transfers

router = SimpleRouter(trailing_slash=False)
router.register("account/transfers", transfers.TransferViewSet, basename="transfer")

urlpatterns = [*router.urls]
