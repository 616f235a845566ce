from django.apps import AppConfig


class WalletsConfig(AppConfig):
    """Money entering and leaving an account, and moving between its own wallets: deposits,
    transfers, withdrawals (and, to come, earn), each through the one ledger (trading.ledger)."""

    name = "wallets"

    def ready(self):
        from trading.audit import register_holds
        from wallets.withdrawals import withdrawal_holds

        register_holds(withdrawal_holds)  # the amount plus fee of each withdrawal not yet sent, rejected or cancelled
