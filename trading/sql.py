"""Exact aggregates over AmountField on every database.

On SQLite amounts are text (see AmountField) and its SUM() would add them as floats, so an
EXACT_SUM aggregate doing Decimal arithmetic is registered on each new SQLite connection.
"""

from decimal import Decimal

from django.db.models import Sum


class ExactSum(Sum):
    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="EXACT_SUM", **extra_context)


class _DecimalSum:
    def __init__(self):
        self.total = None

    def step(self, value):
        if value is not None:
            self.total = Decimal(value) + (self.total or 0)

    def finalize(self):
        return None if self.total is None else str(self.total)


def register_sqlite_functions(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate("EXACT_SUM", 1, _DecimalSum)
