"""Exact decimal arithmetic for money.

Amounts are stored with 18 decimal places and up to 36 digits; the default decimal context (28
significant digits) would silently round sums of such numbers, so every thread starts with enough
precision, and the ledger does its sums in a context that traps any rounding at all.
"""

import decimal
import functools

MAX_DIGITS = 36
DECIMAL_PLACES = 18
AMOUNT_LIMIT = decimal.Decimal(10) ** (MAX_DIGITS - DECIMAL_PLACES)  # every stored amount is less than this
ASSET_PATTERN = r"^[A-Z0-9]{2,12}$"  # an asset's symbol: trading.models.Asset's constraint

EXACT = decimal.Context(
    prec=80,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Rounded, decimal.DivisionByZero, decimal.Overflow],
)


def configure_decimal_context() -> None:
    decimal.DefaultContext.prec = 80
    decimal.setcontext(decimal.Context(prec=80, rounding=decimal.ROUND_HALF_EVEN))


@functools.lru_cache(maxsize=1024)
def _quantum(step: decimal.Decimal) -> decimal.Decimal:
    """1 in the last place of ``step`` (0.01 for 0.010): a market's steps are few, its amounts many."""
    return decimal.Decimal(1).scaleb(min(0, step.normalize().as_tuple().exponent))


def format_amount(value: decimal.Decimal, step: decimal.Decimal) -> str:
    """A decimal string with as many places as ``step`` has (63000 with step 0.01 -> "63000.00").

    Values finer than the step (a fee, a quote amount) keep all their significant places: output
    is never rounded.
    """
    quantized = value.quantize(_quantum(step))
    if quantized != value:
        quantized = value.normalize()
    return format(quantized, "f")
