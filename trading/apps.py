from django.apps import AppConfig
from django.db.backends.signals import connection_created


class TradingConfig(AppConfig):
    name = "trading"

    def ready(self) -> None:
        from trading.sql import register_sqlite_functions

        connection_created.connect(register_sqlite_functions, dispatch_uid="trading.sqlite_functions")
