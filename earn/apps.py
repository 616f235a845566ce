from django.apps import AppConfig


class EarnConfig(AppConfig):
    """Earn products: principal subscribed from spot into the earn wallet, and daily interest on it
    paid from the operator-funded interest account, each through the one ledger (trading.ledger)."""

    name = "earn"

    def ready(self) -> None:
        from earn.interest import interest_journals, unowed_interest
        from earn.subscriptions import subscription_holds, subscription_journals
        from trading.audit import register_check, register_holds
        from wallets.audit import register_journals

        register_holds(subscription_holds)  # the earn wallets' locked buckets, for trading.audit
        register_journals(subscription_journals)  # each subscription's principal moved, and interest paid
        register_journals(interest_journals)
        register_check(unowed_interest)  # and no more interest than the days held and the rate owed
