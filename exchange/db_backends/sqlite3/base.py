"""SQLite: amounts as fixed-width text (operations.py), with the exact arithmetic on them that
SQLite's own (float) arithmetic cannot do registered on every connection."""

from django.db.backends.sqlite3 import base

from exchange.money import DECIMAL_PLACES, MAX_DIGITS

from .operations import DatabaseOperations, amount_text, to_decimal


class _DecimalSum:
    """EXACT_SUM(amount): the aggregate SUM() would add the texts as floats."""

    def __init__(self):
        self.total = None

    def step(self, value):
        if value is not None:
            self.total = to_decimal(value) + (self.total or 0)

    def finalize(self):
        return None if self.total is None else str(self.total)


def _exact_add(a, b) -> str | None:
    """EXACT_ADD(a, b): a + b as the field stores it, for ``SET amount = EXACT_ADD(amount, %s)``."""
    if a is None or b is None:
        return None
    return amount_text(to_decimal(a) + to_decimal(b), MAX_DIGITS, DECIMAL_PLACES)


class DatabaseWrapper(base.DatabaseWrapper):
    data_types = {**base.DatabaseWrapper.data_types, "AmountField": "text"}
    ops_class = DatabaseOperations

    def get_new_connection(self, conn_params):
        conn = super().get_new_connection(conn_params)
        conn.create_aggregate("EXACT_SUM", 1, _DecimalSum)
        conn.create_function("EXACT_ADD", 2, _exact_add, deterministic=True)
        return conn
