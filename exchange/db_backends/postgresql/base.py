"""PostgreSQL: amounts are numeric, which psycopg reads and writes as Decimal as they are."""

from django.db.backends.postgresql import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def adapt_amountfield_value(self, value, max_digits, decimal_places):
        return value

    # No converter for "AmountField" (the base class returns none): psycopg's Decimal is already
    # exact, so a call per value read would be pure overhead.


class DatabaseWrapper(base.DatabaseWrapper):
    data_types = {**base.DatabaseWrapper.data_types, "AmountField": "numeric(%(max_digits)s, %(decimal_places)s)"}
    ops_class = DatabaseOperations
