"""Strict input: what a client sends is refused with the envelope and a code, never normalised, never a 500."""

import json
import logging
from base64 import b64encode
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.test import Client

from exchange.jsonparse import DEPTH_TOKEN, MAX_DEPTH, StrictJSONError, loads_strict
from trading.models import MatcherCommand, Order

from .conftest import ledger_snapshot
from .signing import now_ms
from .test_public_api import assert_error

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

LIMIT_BUY = {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01"}
DEEP = "[" * 1000 + "]" * 1000


def written():
    orders = sorted(Order.objects.values_list("id", "status", "cancel_requested"))
    return ledger_snapshot(), orders, MatcherCommand.objects.count()


def post_raw(signed, path: str, body: str):
    """A signed POST of exactly these bytes (the signing client would re-encode a Python value)."""
    raw = body.encode()
    return signed.client.generic("POST", path, raw, content_type="application/json",
                                 headers=signed.headers("POST", path, raw), REMOTE_ADDR=signed.remote_addr)


@pytest.fixture
def signed(alice, make_key, trade):
    trade(alice, side="buy", type="limit", price=Decimal("60000"), size=Decimal("0.01"))  # a live order cancel-all would touch
    return make_key(alice)


@pytest.mark.parametrize("path, body", [
    ("/v1/orders", DEEP),
    ("/v1/orders", '{"pair": ' + DEEP + "}"),
    ("/v1/orders/cancel-all", DEEP),
    ("/v1/orders/cancel-all", '{"pair": ' + DEEP + "}"),
])
def test_json_nested_a_thousand_deep_is_refused(signed, path, body):
    before = written()

    response = post_raw(signed, path, body)

    assert_error(response, 400, "INVALID_REQUEST")
    assert "nested deeper" in response.json()["error"]["message"]
    assert written() == before


@pytest.mark.parametrize("body, words", [
    ('{"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01", "size": "0.02"}',
     "Duplicate key 'size'"),
    ('{"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": NaN}', "NaN"),
    ('{"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01", '
     '"client_order_id": "\\ud800"}', "lone surrogate"),
])
def test_json_a_strict_reader_refuses_is_refused(signed, body, words):
    before = written()

    response = post_raw(signed, "/v1/orders", body)

    assert_error(response, 400, "INVALID_REQUEST")
    assert words in response.json()["error"]["message"]
    assert written() == before


@pytest.mark.parametrize("field, value", [
    ("price", "63000.00\n"), ("price", " 63000"), ("price", "６３０００"), ("size", "0.01\t"),
    ("pair", "BTC-USD "), ("pair", "BTC-USD\u0000"), ("post_only", "yes"), ("post_only", "true"), ("post_only", 1),
])
def test_amounts_pairs_and_flags_in_any_other_form_are_refused(signed, field, value):
    before = written()

    response = signed.post("/v1/orders", {**LIMIT_BUY, field: value})

    assert_error(response, 400, "INVALID_REQUEST")
    assert field in response.json()["error"]["details"]["fields"]
    assert written() == before


@pytest.mark.parametrize("variant", [" abc ", "abc\n", "abc\u0000", "\u00a0abc"])
def test_client_order_ids_that_differ_are_never_trimmed_into_one(signed, variant):
    first = signed.post("/v1/orders", {**LIMIT_BUY, "client_order_id": "abc"})
    assert first.status_code == 201, first.content
    before = written()

    response = signed.post("/v1/orders", {**LIMIT_BUY, "client_order_id": variant})

    assert_error(response, 400, "INVALID_REQUEST")
    assert "client_order_id" in response.json()["error"]["details"]["fields"]
    assert written() == before


def test_cancel_all_refuses_a_pair_with_surrounding_whitespace(signed):
    before = written()

    response = signed.post("/v1/orders/cancel-all", {"pair": " BTC-USD"})

    assert_error(response, 400, "INVALID_REQUEST")
    assert written() == before


@pytest.mark.parametrize("body", [{"pairs": "BTC-USD"}, {"symbol": "BTC-USD"}, {"pair": "BTC-USD", "side": "buy"}])
def test_cancel_all_refuses_a_field_it_does_not_take_rather_than_cancel_more(signed, body):
    """A misspelt "pair" must not widen the cancel to every pair."""
    before = written()

    response = signed.post("/v1/orders/cancel-all", body)

    assert_error(response, 400, "INVALID_REQUEST")
    assert sorted(response.json()["error"]["details"]["fields"]) == sorted(set(body) - {"pair"})
    assert written() == before


@pytest.mark.parametrize("query", ["depth=²", "depth=٣", "depth=%EF%BC%93", "depth=+3", "depth=%203", "depth=3.0",
                                   "depth=1_0"])
def test_order_book_depth_takes_ascii_digits_only(markets, query):
    response = Client().get(f"/v1/orderbook/BTC-USD?{query}")

    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["details"] == {"parameter": "depth"}


@pytest.mark.parametrize("query", ["limit=٣", "limit=3%0A", "before=٣"])
def test_trades_limit_and_before_take_ascii_digits_only(markets, query):
    response = Client().get(f"/v1/trades/BTC-USD?{query}")

    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["details"] == {"parameter": query.partition("=")[0]}


@pytest.mark.parametrize("query", ["limit=٣", "limit=x", "limit=0", "order_id=٣", "status=open, filled"])
def test_private_lists_take_ascii_digits_and_exact_names_only(signed, query):
    path = "/v1/fills" if query.startswith("order_id") else "/v1/orders"
    name, _, value = query.partition("=")

    response = signed.get(f"{path}?{name}={quote(value)}")  # signed as sent: percent-encoded

    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["details"] == {"parameter": name}


def cursor(**tokens) -> str:
    return b64encode("&".join(f"{name}={value}" for name, value in tokens.items()).encode()).decode()


@pytest.mark.parametrize("value", [cursor(p="٣"), cursor(p="x"), cursor(o="٣", p="5"), cursor(r="2"), "%%%"])
def test_a_cursor_not_made_by_the_server_is_refused(signed, value):
    response = signed.get(f"/v1/orders?cursor={quote(value)}")

    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["details"] == {"parameter": "cursor"}


def test_the_next_cursor_still_pages(signed, alice, trade):
    trade(alice, side="buy", type="limit", price=Decimal("59000"), size=Decimal("0.01"))

    first = signed.get("/v1/orders?limit=1").json()
    second = signed.client.get(first["next"].removeprefix("http://testserver"),
                               headers=signed.headers("GET", first["next"].removeprefix("http://testserver"), b""))

    assert second.status_code == 200, second.content
    assert [order["price"] for order in first["results"] + second.json()["results"]] == ["59000.00", "60000.00"]


@pytest.mark.parametrize("path, code", [
    ("/v1/ticker/%00", "INVALID_REQUEST"), ("/v1/trades/BTC%00USD", "INVALID_REQUEST"),
    ("/v1/orderbook/BTC-USD?depth=1%00", "INVALID_PARAMETER"), ("/v1/orderbook/BTC-USD%0A", "INVALID_REQUEST"),
    ("/v1/markets?x%7F=1", "INVALID_PARAMETER"), ("/v1/nowhere/%01", "INVALID_REQUEST"),
])
def test_control_characters_in_a_path_or_query_are_refused(markets, path, code):
    response = Client().get(path)

    assert_error(response, 400, code)
    assert "control character" in response.json()["error"]["message"]


def test_control_characters_in_a_signed_query_are_refused_before_the_database(signed):
    before = written()

    response = signed.get("/v1/orders?pair=BTC%00USD")

    assert_error(response, 400, "INVALID_PARAMETER")
    assert written() == before


def test_a_disallowed_host_under_v1_gets_the_envelope(markets, caplog):
    response = Client().get("/v1/markets", HTTP_HOST="evil.example")

    assert_error(response, 400, "INVALID_REQUEST")
    assert "Host" in response.json()["error"]["message"]
    # A scanner's Host is answered, not an error for operators (Django logs it at ERROR, with a traceback).
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_disallowed_host_elsewhere_keeps_the_stock_page(db):
    response = Client().get("/account/login/", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


def test_too_many_query_parameters_get_the_envelope(markets, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10

    response = Client().get("/v1/markets?" + "&".join(f"p{n}=1" for n in range(11)))

    assert_error(response, 400, "INVALID_REQUEST")


def test_loads_strict_counts_only_brackets_outside_strings():
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    brackets_in_text = json.dumps({"text": "[{" * 1000, "escaped": '\\"[[[['})

    assert loads_strict(nested) == json.loads(nested)
    assert loads_strict(brackets_in_text) == json.loads(brackets_in_text)
    with pytest.raises(StrictJSONError, match="nested deeper"):
        loads_strict("[" + nested + "]")


@pytest.mark.parametrize("tail", ["", "\\", "\n"])
def test_the_depth_scan_reads_an_unterminated_string_once(tail):
    """A scan that started again at every quote of an unterminated string took seconds for 16 KB (one
    WebSocket message stalled its Daphne process): from its first quote the string is one token."""
    text = '"' + '\\"' * 5000 + "[" * (MAX_DEPTH + 1) + tail

    assert [token.span() for token in DEPTH_TOKEN.finditer(text)] == [(0, len(text))]
    with pytest.raises(StrictJSONError, match="Not valid JSON"):
        loads_strict(text)


@pytest.mark.parametrize("text", ['{"a": {"b": 1, "b": 1}}', "[Infinity]", "[-Infinity]", '"\\udc00"', b"\xff",
                                  "1" * 5000, '{"a": 1', ""])
def test_loads_strict_refuses_with_its_one_exception(text):
    with pytest.raises(StrictJSONError):
        loads_strict(text)


def test_a_browser_session_without_its_csrf_token_gets_the_envelope(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user)
    before = written()

    response = client.post("/v1/orders", LIMIT_BUY, content_type="application/json")

    assert_error(response, 403, "PERMISSION_DENIED")
    assert "CSRF" in response.json()["error"]["message"]
    assert written() == before


@pytest.mark.parametrize("key_id", ["hkt_live_\x00" + "0" * 23, " hkt_live_" + "0" * 24, "hkt_live_" + "٣" * 24,
                                    "hkt_live_" + "0" * 24 + "\n", "x" * 5000])
def test_an_api_key_id_no_key_could_have_is_refused_without_a_look_up(db, django_assert_num_queries, key_id):
    headers = {"HTTP_X_API_KEY": key_id, "HTTP_X_API_TIMESTAMP": str(now_ms()), "HTTP_X_API_NONCE": "abcdefgh",
               "HTTP_X_API_SIGNATURE": "0" * 64}

    with django_assert_num_queries(0):
        response = Client().get("/v1/orders", **headers)

    assert_error(response, 401, "INVALID_API_KEY")


@pytest.mark.parametrize("path, body, field", [
    ("/v1/orders", {**LIMIT_BUY, "pair": 5}, "pair"),
    ("/v1/orders", {**LIMIT_BUY, "client_order_id": 5}, "client_order_id"),
    ("/v1/orders/cancel", {"client_order_ids": [0]}, "client_order_ids"),
    ("/v1/orders/cancel", {"order_ids": ["1"]}, "order_ids"),
    ("/v1/orders/cancel-all", {"pair": 5}, "pair"),
    ("/v1/orders/cancel-all-after", {"timeout_ms": "60000"}, "timeout_ms"),
    ("/v1/account/transfers", {"asset": 5, "amount": "1", "from": "spot", "to": "margin"}, "asset"),
    ("/v1/earn/subscriptions", {"product_id": "1", "amount": "100"}, "product_id"),
])
def test_a_json_body_takes_each_field_in_its_own_json_type(signed, path, body, field):
    # 5 is not the identifier "5", nor "1" the number 1: DRF would take either for the other.
    before = written()

    response = signed.post(path, body)

    assert_error(response, 400, "INVALID_REQUEST")
    assert field in response.json()["error"]["details"]["fields"]
    assert written() == before
