"""SQLite has no exact decimal type (its numeric affinity turns "0.1" into a float, exact to 15
digits only), so an amount is stored as fixed-width text, ``000000000000063000.500000000000000000``:
exact, and for the non-negative values that are compared and sorted (prices, sizes, balances), text
order is numeric order. A negative value (a ledger debit) sorts before every non-negative one,
which is what ``>= 0`` checks need."""

from decimal import Decimal

from django.db.backends.sqlite3 import operations


def amount_text(value: Decimal, max_digits: int, decimal_places: int) -> str:
    width = max_digits + 1  # digits and the point
    return format(value.quantize(Decimal(1).scaleb(-decimal_places)), f"0{width}.{decimal_places}f")


def to_decimal(value) -> Decimal:
    """An amount as SQLite returns it: text is exact; a number comes from SQLite's own arithmetic
    over the text (its SUM(), statistics) and is taken as it prints."""
    return Decimal(value if isinstance(value, str) else repr(value))


class DatabaseOperations(operations.DatabaseOperations):
    def adapt_amountfield_value(self, value, max_digits, decimal_places):
        return None if value is None else amount_text(value, max_digits, decimal_places)

    def get_db_converters(self, expression):
        converters = super().get_db_converters(expression)
        if expression.output_field.get_internal_type() == "AmountField":
            converters.append(self.convert_amountfield_value)
        return converters

    def convert_amountfield_value(self, value, expression, connection):
        return None if value is None else to_decimal(value)
