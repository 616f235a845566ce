from django.apps import AppConfig


class EarnConfig(AppConfig):
    """Earn products: principal subscribed from spot into the earn wallet, and daily interest on it
    paid from the operator-funded interest account, each through the one ledger (trading.ledger)."""

    name = "earn"

    def ready(self) -> None:
        from earn.subscriptions import subscription_holds
        from trading.audit import register_holds

        register_holds(subscription_holds)  # the earn wallets' locked buckets, for trading.audit
