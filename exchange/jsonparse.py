"""Strict JSON for everything a client sends (REST bodies and WebSocket messages).

``json.loads`` accepts what a strict reader must refuse: duplicate keys (the last silently wins),
``NaN`` and ``Infinity``, strings with lone surrogates (no database can store them), and nesting
deep enough to raise ``RecursionError``. ``loads_strict`` refuses each with ``StrictJSONError``.
"""

import json
import re
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32

# A complete string literal (skipped: its brackets are text), an unterminated one (to the end, once),
# or one bracket. Each match ends where the next starts, so the scan is linear in the text.
DEPTH_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


class StrictJSONError(ValueError):
    """The text is not JSON, or is JSON this API refuses; the message says which, for the client."""


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = {}
    for key, value in pairs:
        if key in result:
            raise StrictJSONError(f"Duplicate key {key!r} in a JSON object.")
        result[key] = value
    return result


def _refuse_constant(name: str) -> None:
    raise StrictJSONError(f"{name} is not a JSON number.")


def _check_depth(text: str, max_depth: int) -> None:
    """Counted over the text before parsing, so that deep input never reaches the recursive decoder."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for token in DEPTH_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > max_depth:
                raise StrictJSONError(f"JSON nested deeper than {max_depth} levels.")
        elif bracket in "]}":
            depth -= 1


def _check_strings(value: Any) -> None:
    """Every string and key must be encodable text: a lone surrogate (``"\\ud800"``) is refused."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise StrictJSONError("A JSON string holds a lone surrogate (not valid Unicode text).") from None
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def loads_strict(data: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document, refusing what ``json.loads`` lets through (see the module's doc)."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise StrictJSONError("The body is not UTF-8 text.") from None
    _check_depth(data, max_depth)
    try:
        value = json.loads(data, object_pairs_hook=_pairs_without_duplicates, parse_constant=_refuse_constant)
    except StrictJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"Not valid JSON: {exc}") from None
    except ValueError:
        # int() refuses to convert more than 4,300 digits.
        raise StrictJSONError("A JSON number has too many digits.") from None
    _check_strings(value)
    return value


class StrictJSONParser(JSONParser):
    """DRF's JSON parser (REST_FRAMEWORK DEFAULT_PARSER_CLASSES) on ``loads_strict``."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return loads_strict(stream.read())
        except StrictJSONError as exc:
            raise ParseError(str(exc)) from None
