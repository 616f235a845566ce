from django.apps import AppConfig


class WalletsConfig(AppConfig):
    """Money entering and leaving an account, and moving between its own wallets: deposits,
    transfers (and, to come, withdrawals and earn), each through the one ledger (trading.ledger)."""

    name = "wallets"
