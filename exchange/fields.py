"""The wire format of SPEC section 1 (decimal strings, integers, millisecond times, identifiers), strictly.

Python's ``int()`` and ``Decimal()`` take Unicode digits ("٣"), underscores, signs and surrounding
whitespace, DRF trims strings, and ``$`` in a pattern matches before a final newline: input goes
through the helpers here, which refuse all of that rather than normalise it.
"""

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from exchange.money import ASSET_PATTERN, DECIMAL_PLACES, MAX_DIGITS, format_amount

PLAIN_DECIMAL = re.compile(r"[0-9]{1,36}(\.[0-9]{1,36})?")
SIGNED_PLAIN_DECIMAL = re.compile(r"-?" + PLAIN_DECIMAL.pattern)  # an operator's amount: ASCII digits, no "_"
PLAIN_INTEGER = re.compile(r"[0-9]{1,18}")  # fits a 64-bit id
LARGEST_INTEGER = 10**18 - 1  # the largest PLAIN_INTEGER
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
PAIR_PATTERN = r"^[A-Za-z0-9]{2,12}-[A-Za-z0-9]{2,12}$"  # BASE-QUOTE of two assets, in any case

# The OpenAPI document's patterns (ECMA-262, as JSON Schema reads them), each exactly what the server takes.
# A decimal an input takes: DecimalString's rule, and above zero (every amount a request gives is).
POSITIVE_DECIMAL_PATTERN = (
    r"^(?=[0-9]{1,36}(?:\.[0-9]{1,36})?$)(?=[0-9.]*[1-9])"
    rf"0*(?:[1-9][0-9]{{0,{MAX_DIGITS - DECIMAL_PLACES - 1}}})?(?:\.(?:[0-9]{{0,{DECIMAL_PLACES - 1}}}[1-9])?0*)?$"
)
DECIMAL_OUTPUT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
SIGNED_DECIMAL_OUTPUT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def one_or_more_of(names: Iterable[str]) -> str:
    """The pattern of a comma-separated list of ``names`` (a filter such as ``status=open,filled``)."""
    either = "|".join(re.escape(name) for name in names)
    return f"^(?:{either})(?:,(?:{either}))*$"


def parse_integer(text: str) -> int | None:
    """A non-negative integer written in ASCII digits only, else None."""
    return int(text) if PLAIN_INTEGER.fullmatch(text) else None


def has_control_character(text: str) -> bool:
    return CONTROL_CHARACTER.search(text) is not None


def refuse_untrimmed_text(value: str) -> None:
    """Validator of identifiers: a control character or surrounding whitespace is refused, not trimmed."""
    if has_control_character(value) or value != value.strip():
        raise serializers.ValidationError("No control characters or surrounding whitespace.")


class DecimalString(serializers.Field):
    """A non-negative decimal as a JSON string. Floats, exponents, NaN and signs are refused, not rounded.

    Output keeps the places of ``step_from(context)`` (a market's tick or lot) when given; ``signed``: an
    output that may be negative. Its OpenAPI schema (exchange/schema.py) has the pattern of its direction.
    """

    default_error_messages = {
        "not_a_string": "Must be a decimal string such as \"0.01\", not a JSON number.",
        "invalid": "Must be a plain non-negative decimal such as \"63000.00\" (no sign, exponent or spaces).",
        "too_precise": f"At most {MAX_DIGITS - DECIMAL_PLACES} digits before and {DECIMAL_PLACES} after the point.",
    }

    def __init__(self, *, step_from=None, signed=False, **kwargs):
        self.step_from, self.signed = step_from, signed
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> Decimal:
        if not isinstance(data, str):
            self.fail("not_a_string")
        if not PLAIN_DECIMAL.fullmatch(data):
            self.fail("invalid")
        value = Decimal(data)
        whole, _, fraction = data.partition(".")
        if len(whole.lstrip("0")) > MAX_DIGITS - DECIMAL_PLACES or len(fraction.rstrip("0")) > DECIMAL_PLACES:
            self.fail("too_precise")
        return value

    def to_representation(self, value: Decimal) -> str:
        step = self.step_from(self.context) if self.step_from else value
        return format_amount(value, step)


@extend_schema_field({"type": "string", "format": "decimal", "pattern": DECIMAL_OUTPUT_PATTERN})
class FormattedDecimal(serializers.CharField):
    """An amount a service gives already written as a decimal string (the OpenAPI document says so)."""


class IntegerString(serializers.IntegerField):
    """An integer from a query string (ASCII digits) or a JSON number; "3.0", "+3", " 3" and "٣" are refused.
    At most 18 digits (``LARGEST_INTEGER``), as a query string's: an id or time has no more."""

    default_error_messages = {"invalid": "Must be a whole number in ASCII digits (0-9), with no sign or spaces."}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_value", LARGEST_INTEGER)
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        value = parse_integer(data) if isinstance(data, str) else None
        if value is None:
            self.fail("invalid")
        return value


class JsonInteger(IntegerString):
    """An integer in a JSON body: a JSON number ("5", a string, is refused as 5.0 is)."""

    default_error_messages = {"not_a_number": "Must be a JSON integer, not a string."}

    def to_internal_value(self, data) -> int:
        if isinstance(data, str):
            self.fail("not_a_number")
        return super().to_internal_value(data)


class StrictBoolean(serializers.BooleanField):
    """JSON true or false only: DRF's BooleanField also takes "yes", "1", 0 and "on"."""

    default_error_messages = {"invalid": "Must be true or false (a JSON boolean)."}

    def to_internal_value(self, data) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictTextMixin:
    """A string field that refuses (never trims) surrounding whitespace and control characters.

    ``schema_pattern``: the shape the OpenAPI document gives it when the check is not a pattern (a pair, an
    asset, a list of statuses are looked up); what does not match it is refused by that check."""

    default_error_messages = {"not_a_string": "Must be a JSON string."}

    def __init__(self, *args, schema_pattern: str | None = None, **kwargs):
        kwargs["trim_whitespace"] = False
        self.schema_pattern = schema_pattern
        super().__init__(*args, **kwargs)
        self.validators.append(refuse_untrimmed_text)

    def to_internal_value(self, data):
        if not isinstance(data, str):  # DRF would take 5 for "5"
            self.fail("not_a_string")
        return super().to_internal_value(data)


class Identifier(StrictTextMixin, serializers.CharField):
    pass


class IdentifierPattern(StrictTextMixin, serializers.RegexField):
    pass


class PairName(Identifier):
    """A pair as a request names it: ``BASE-QUOTE`` in any case, looked up (another shape is UNKNOWN_PAIR)."""

    def __init__(self, **kwargs):
        super().__init__(max_length=25, schema_pattern=PAIR_PATTERN, **kwargs)


class AssetSymbol(Identifier):
    """An asset's symbol as a request names it, looked up (another shape is an unknown asset)."""

    def __init__(self, max_length=12, **kwargs):
        super().__init__(max_length=max_length, schema_pattern=ASSET_PATTERN, **kwargs)


@extend_schema_field({"type": "integer", "format": "int64", "description": "Milliseconds since the Unix epoch."})
class MillisecondsField(serializers.Field):
    def to_representation(self, value: datetime) -> int:
        return to_milliseconds(value)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAST_MILLISECOND = 253402300799999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds


class Milliseconds(IntegerString):
    """A time in ms since the epoch, as a datetime."""

    def __init__(self, **kwargs):
        super().__init__(min_value=0, max_value=LAST_MILLISECOND, **kwargs)

    def run_validation(self, data) -> datetime:  # after the range check on the integer
        return EPOCH + timedelta(milliseconds=super().run_validation(data))


def to_milliseconds(value: datetime) -> int:
    """Exact integer milliseconds (no float rounding of the timestamp)."""
    return (value - EPOCH) // timedelta(milliseconds=1)
