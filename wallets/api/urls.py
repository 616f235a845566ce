from rest_framework.routers import SimpleRouter

from wallets.api import deposits, ledger, transfers, withdrawals

router = SimpleRouter(trailing_slash=False)
router.register("account/transfers", transfers.TransferViewSet, basename="transfer")
router.register("account/deposits", deposits.DepositViewSet, basename="deposit")
router.register("withdrawals", withdrawals.WithdrawalViewSet, basename="withdrawal")
router.register("account/ledger", ledger.LedgerViewSet, basename="ledger")

urlpatterns = [*router.urls]
