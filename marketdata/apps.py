from django.apps import AppConfig


class MarketdataConfig(AppConfig):
    name = "marketdata"

    def ready(self):
        from marketdata import publishing
        from trading.signals import balances_changed, batch_committed, book_loaded, drain_finished, orders_changed

        batch_committed.connect(publishing.publish_batch, dispatch_uid="marketdata.publish_batch")
        drain_finished.connect(publishing.publish_owed_ticker, dispatch_uid="marketdata.publish_owed_ticker")
        orders_changed.connect(publishing.publish_account_changes, dispatch_uid="marketdata.publish_account_changes")
        balances_changed.connect(publishing.publish_account_changes, dispatch_uid="marketdata.publish_balance_changes")
        book_loaded.connect(publishing.forget_lost_deltas, dispatch_uid="marketdata.forget_lost_deltas")
