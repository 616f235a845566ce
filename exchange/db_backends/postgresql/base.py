"""PostgreSQL: amounts are numeric, which psycopg reads and writes as Decimal as they are."""

from django.db.backends.postgresql import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def adapt_amountfield_value(self, value, max_digits, decimal_places):
        return value

    # No converter for "AmountField" (the base class returns none): a call per value read was a
    # visible cost of a matcher batch, and psycopg's Decimal is already exact.


class DatabaseWrapper(base.DatabaseWrapper):
    data_types = {**base.DatabaseWrapper.data_types, "AmountField": "numeric(%(max_digits)s, %(decimal_places)s)"}
    ops_class = DatabaseOperations
