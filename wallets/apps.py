from django.apps import AppConfig


class WalletsConfig(AppConfig):
    """Money entering and leaving an account, and moving between its own wallets: deposits,
    transfers, withdrawals (and, to come, earn), each through the one ledger (trading.ledger)."""

    name = "wallets"

    def ready(self):
        from trading.audit import register_check, register_holds
        from wallets.audit import journal_problems, register_journals
        from wallets.deposits import deposit_journals
        from wallets.transfers import transfer_journals
        from wallets.withdrawals import withdrawal_holds, withdrawal_journals

        register_holds(withdrawal_holds)  # the amount plus fee of each withdrawal not yet sent, rejected or cancelled
        for source in (deposit_journals, transfer_journals, withdrawal_journals):
            register_journals(source)
        register_check(journal_problems)  # each record has its journal, with the sources of earn too
