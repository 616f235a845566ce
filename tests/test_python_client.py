"""The Python client in clients/python (package hkt_client): signing, the hkt-sign command, typed
errors and retries. The network is httpx.MockTransport serving canned responses, except for the
last tests, which send the client's requests into this Django app in-process to show that the
server accepts its signatures."""

import hashlib
import hmac
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from accounts import keys

CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "python"
try:
    import hkt_client
except ImportError:  # not installed into this venv yet: use the source tree
    sys.path.insert(0, str(CLIENT_DIR))
    import hkt_client

from hkt_client import ApiError, Client, errors, signing

SECRET = "3f9c2b7d5e1a4c6b8d0f2e4a6c8b0d1f3e5a7c9b1d3f5e7a9c1b3d5f7e9a1c3b"
KEY = "hkt_test_0123456789abcdef01234567"
SPEC_PREHASH = b'1714521600000\n7f3a1b8e\nPOST\n/v1/orders\n{"pair":"BTC-USD"}'
ORDER_BODY = {"order_id": 1, "client_order_id": "x", "status": "open"}


def spec_example_signature() -> str:
    return hmac.new(SECRET.encode("utf-8"), SPEC_PREHASH, hashlib.sha256).hexdigest()


def fake_server(*responses):
    """A Client whose transport answers with `responses` in turn (an exception is raised instead),
    and the list of requests it received."""
    received, queue = [], list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        received.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = Client("https://api.test", KEY, SECRET, http=httpx.Client(transport=httpx.MockTransport(handle)),
                    backoff=0)
    return client, received


def error_response(status: int, code: str, details=None, headers=None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": f"{code} happened",
                                                  "details": details or {}}}, headers=headers)


def assert_signed_as_server_checks(request: httpx.Request) -> None:
    """Recompute the signature with the server's own code over what was actually sent."""
    headers = request.headers
    message = keys.prehash(headers["X-Api-Timestamp"], headers["X-Api-Nonce"], request.method,
                           request.url.raw_path.decode(), request.content)
    assert headers["X-Api-Signature"] == keys.sign(SECRET, message)
    assert headers["X-Api-Key"] == KEY


# Signing


def test_spec_example_prehash_and_signature():
    message = signing.prehash(1714521600000, "7f3a1b8e", "POST", "/v1/orders", b'{"pair":"BTC-USD"}')

    assert message == SPEC_PREHASH
    assert signing.sign(SECRET, message) == spec_example_signature()


def test_client_signing_matches_the_server_byte_for_byte():
    body = '{"pair":"BTC-USD","note":"café"}'.encode()
    args = ("1714521600000", "nonce_-AZ09", "post", "/v1/orders?status=open,filled&pair=BTC-USD", body)

    assert signing.prehash(*args) == keys.prehash(*args)
    assert signing.sign(SECRET, signing.prehash(*args)) == keys.sign(SECRET, keys.prehash(*args))


def test_signed_headers():
    headers = signing.signed_headers(KEY, SECRET, "POST", "/v1/orders", b'{"pair":"BTC-USD"}',
                                     timestamp=1714521600000, nonce="7f3a1b8e")

    assert headers == {"X-Api-Key": KEY, "X-Api-Timestamp": "1714521600000", "X-Api-Nonce": "7f3a1b8e",
                       "X-Api-Signature": spec_example_signature()}


def test_signed_headers_default_to_now_and_a_fresh_nonce():
    first = signing.signed_headers(KEY, SECRET, "GET", "/v1/account/balances")
    second = signing.signed_headers(KEY, SECRET, "GET", "/v1/account/balances")

    assert first["X-Api-Nonce"] != second["X-Api-Nonce"]
    assert abs(int(first["X-Api-Timestamp"]) - signing.now_ms()) < 5_000


# The hkt-sign command


def run_cli(*args, secret=SECRET):
    env = {key: value for key, value in os.environ.items() if key != "HKT_SECRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CLIENT_DIR), env.get("PYTHONPATH")]))
    if secret is not None:
        env["HKT_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "hkt_client.cli", *args], env=env, capture_output=True,
                          text=True, timeout=30)


def test_cli_prints_the_spec_example_signature():
    result = run_cli("POST", "/v1/orders", '{"pair":"BTC-USD"}', "1714521600000", "7f3a1b8e")

    assert result.returncode == 0, result.stderr
    assert result.stdout == spec_example_signature() + "\n"


def test_cli_signs_an_empty_body():
    result = run_cli("GET", "/v1/account/balances", "", "1714521600000", "7f3a1b8e")

    expected = hmac.new(SECRET.encode(), b"1714521600000\n7f3a1b8e\nGET\n/v1/account/balances\n",
                        hashlib.sha256).hexdigest()
    assert (result.returncode, result.stdout.strip()) == (0, expected)


def test_cli_without_the_secret_exits_2():
    result = run_cli("POST", "/v1/orders", '{"pair":"BTC-USD"}', "1714521600000", "7f3a1b8e", secret=None)

    assert result.returncode == 2
    assert "HKT_SECRET" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [
    ("POST", "/v1/orders", "{}"),
    ("POST", "/v1/orders", "{}", "not-a-time", "7f3a1b8e"),
    ("POST", "/v1/orders", "{}", "1714521600000", "short"),
])
def test_cli_with_wrong_arguments_exits_2(args):
    result = run_cli(*args)

    assert result.returncode == 2
    assert "usage: hkt-sign" in result.stderr


# Errors


def test_error_body_becomes_its_typed_exception():
    client, _ = fake_server(error_response(400, "INSUFFICIENT_FUNDS", {"asset": "USD", "available": "10.00"}))

    with pytest.raises(errors.InsufficientFunds) as raised:
        client.place_order("BTC-USD", "buy", "limit", price="63000", size="0.01")

    error = raised.value
    assert isinstance(error, ApiError)
    assert (error.code, error.status) == ("INSUFFICIENT_FUNDS", 400)
    assert error.message == "INSUFFICIENT_FUNDS happened"
    assert error.details == {"asset": "USD", "available": "10.00"}


def test_every_server_code_has_its_class():
    from exchange.errors import ErrorCode

    assert errors.CODES == {code.value: code.status for code in ErrorCode}
    assert errors.ERRORS["DUPLICATE_CLIENT_ORDER_ID"] is errors.DuplicateClientOrderId
    assert errors.ERRORS["NONCE_REUSED"].__name__ == "NonceReused"
    assert issubclass(errors.IpNotAllowed, ApiError)


def test_unknown_code_and_foreign_bodies_are_plain_api_errors():
    client, _ = fake_server(error_response(418, "BRAND_NEW_CODE"), httpx.Response(502, text="<html>Bad gateway"))

    with pytest.raises(ApiError) as unknown:
        client.markets()
    client.max_retries = 0
    with pytest.raises(ApiError) as foreign:
        client.markets()

    assert type(unknown.value) is ApiError and unknown.value.code == "BRAND_NEW_CODE"
    assert type(foreign.value) is ApiError and (foreign.value.code, foreign.value.status) == ("HTTP_502", 502)


def test_rate_limited_and_timestamp_errors_carry_their_hints():
    response = error_response(429, "RATE_LIMITED", headers={"Retry-After": "7"})
    rate_limited = errors.from_response(response)
    late = errors.from_response(error_response(401, "TIMESTAMP_OUT_OF_WINDOW", {"server_time": 1714521600000}))

    assert isinstance(rate_limited, errors.RateLimited) and rate_limited.retry_after == 7
    assert isinstance(late, errors.TimestampOutOfWindow) and late.server_time == 1714521600000


# Orders and retries


def test_place_order_sends_decimal_strings_signed_over_the_exact_body():
    client, received = fake_server(httpx.Response(201, json=ORDER_BODY))

    client.place_order("BTC-USD", "buy", "limit", price=Decimal("63000.50"), size=Decimal("1E-8"), post_only=True,
                       client_order_id="grid-42")

    request = received[0]
    assert request.content == (b'{"pair":"BTC-USD","side":"buy","type":"limit","price":"63000.50",'
                               b'"size":"0.00000001","post_only":true,"client_order_id":"grid-42"}')
    assert request.headers["Content-Type"] == "application/json"
    assert_signed_as_server_checks(request)


def test_place_order_always_sends_a_client_order_id():
    client, received = fake_server(httpx.Response(201, json=ORDER_BODY), httpx.Response(201, json=ORDER_BODY))

    client.place_order("BTC-USD", "buy", "market", funds="100")
    client.place_order("BTC-USD", "buy", "market", funds="100")

    ids = [json.loads(request.content)["client_order_id"] for request in received]
    assert all(ids) and ids[0] != ids[1]


@pytest.mark.parametrize("field", ["price", "size", "funds", "stop_price"])
def test_float_amounts_are_refused_before_anything_is_sent(field):
    client, received = fake_server()
    amounts = {"price": "63000", "size": "0.01", field: 0.1}

    with pytest.raises(TypeError, match=field):
        client.place_order("BTC-USD", "buy", "limit", **amounts)
    assert received == []


def test_place_order_retry_after_a_connection_error_repeats_the_order_id_with_a_new_nonce():
    client, received = fake_server(httpx.ConnectError("connection refused"), httpx.Response(201, json=ORDER_BODY))

    assert client.place_order("BTC-USD", "buy", "limit", price="63000", size="0.01") == ORDER_BODY

    first, retry = received
    assert first.content == retry.content
    assert json.loads(first.content)["client_order_id"] == json.loads(retry.content)["client_order_id"]
    assert first.headers["X-Api-Nonce"] != retry.headers["X-Api-Nonce"]
    assert_signed_as_server_checks(first)
    assert_signed_as_server_checks(retry)


@pytest.mark.parametrize("failure", [httpx.ReadTimeout("timed out"), error_response(500, "INTERNAL_ERROR"),
                                     error_response(503, "SERVICE_UNAVAILABLE")])
def test_place_order_is_retried_after_ambiguous_failures(failure):
    client, received = fake_server(failure, httpx.Response(200, json=ORDER_BODY))

    client.place_order("BTC-USD", "sell", "limit", price="63000", size="0.01", client_order_id="mine")

    assert [json.loads(request.content)["client_order_id"] for request in received] == ["mine", "mine"]


def test_rate_limited_waits_retry_after_then_retries():
    client, received = fake_server(error_response(429, "RATE_LIMITED", headers={"Retry-After": "0"}),
                                   httpx.Response(200, json={"balances": []}))

    assert client.balances() == {"balances": []}
    assert len(received) == 2
    assert received[0].headers["X-Api-Nonce"] != received[1].headers["X-Api-Nonce"]


def test_retries_stop_after_max_retries():
    limited = error_response(429, "RATE_LIMITED", headers={"Retry-After": "0"})
    client, received = fake_server(*[limited] * 4)

    with pytest.raises(errors.RateLimited) as raised:
        client.ticker("BTC-USD")

    assert raised.value.retry_after == 0
    assert len(received) == 4  # the first attempt and max_retries=3 more


def test_cancel_order_is_retried_but_cancel_all_is_not_after_a_5xx():
    cancelled = {"order_id": 7, "status": "cancelled"}
    client, received = fake_server(error_response(502, "INTERNAL_ERROR"), httpx.Response(200, json=cancelled),
                                   error_response(500, "INTERNAL_ERROR"))

    assert client.cancel_order(7) == cancelled
    with pytest.raises(errors.InternalError):
        client.cancel_all("BTC-USD")

    assert [request.url.path for request in received] == ["/v1/orders/7/cancel"] * 2 + ["/v1/orders/cancel-all"]
    assert received[0].content == b""
    assert received[2].content == b'{"pair":"BTC-USD"}'


def test_cancel_all_is_retried_when_the_connection_was_never_made():
    client, received = fake_server(httpx.ConnectError("refused"), httpx.Response(202, json={"orders": []}))

    assert client.cancel_all() == {"orders": []}
    assert len(received) == 2


def test_timestamp_out_of_window_corrects_the_clock_and_retries_once():
    server_time = signing.now_ms() + 60_000
    late = error_response(401, "TIMESTAMP_OUT_OF_WINDOW", {"server_time": server_time, "tolerance_ms": 5000})
    client, received = fake_server(late, httpx.Response(200, json={"balances": []}), late, late)

    client.balances()
    assert abs(int(received[1].headers["X-Api-Timestamp"]) - server_time) < 5_000
    assert received[0].headers["X-Api-Nonce"] != received[1].headers["X-Api-Nonce"]

    with pytest.raises(errors.TimestampOutOfWindow):  # once per call: a second refusal is raised
        client.balances()
    assert len(received) == 4


def test_query_strings_are_signed_exactly_as_sent():
    client, received = fake_server(httpx.Response(200, json={"results": []}),
                                   httpx.Response(200, json={"order_id": 1}))

    client.list_orders(pair="BTC-USD", status=["open", "partially_filled"])
    client.get_order_by_client_id("grid-42")

    assert received[0].url.params["status"] == "open,partially_filled"
    assert received[1].url.raw_path == b"/v1/orders/client:grid-42"
    for request in received:
        assert_signed_as_server_checks(request)


def test_public_calls_are_not_signed_and_private_calls_need_a_secret():
    client, received = fake_server(httpx.Response(200, json={"bids": [], "asks": []}))

    client.orderbook("BTC-USD", depth=10)
    assert received[0].url.raw_path == b"/v1/orderbook/BTC-USD?depth=10"
    assert "X-Api-Signature" not in received[0].headers
    with pytest.raises(ValueError):
        Client("https://api.test").balances()


# Against this server, in-process (no network): the server accepts what the client signs.


@pytest.fixture
def in_process_http(db):
    """An HTTP client whose requests this process's WSGI application answers."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from exchange.wsgi import application

    # As Django's test client does: a request must not close the test's database connection.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=application)) as http:
            yield http
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


@pytest.fixture
def live(make_account, fund, make_key, in_process_http):
    account = make_account()
    fund(account, "USD", "100000")
    bot = make_key(account)
    with Client("http://testserver", bot.key_id, bot.secret, http=in_process_http) as client:
        yield client


def test_the_server_accepts_the_clients_signatures(live):
    usd = [row for row in live.balances()["balances"] if row["asset"] == "USD"]

    assert usd and usd[0]["spot"]["available"] == "100000.00"
    assert live.list_orders(pair="BTC-USD", status=["open", "partially_filled"], limit=5)["results"] == []
    with pytest.raises(errors.OrderNotFound):
        live.get_order_by_client_id("nothing-here")
    with pytest.raises(errors.UnknownPair):
        live.ticker("NOPE-USD")


def test_a_repeated_order_is_the_same_order_on_the_server(live):
    from trading.models import Order

    first = live.place_order("BTC-USD", "buy", "limit", price=Decimal("20000"), size="0.01", client_order_id="once")
    again = live.place_order("BTC-USD", "buy", "limit", price=Decimal("20000"), size="0.01", client_order_id="once")

    assert again["order_id"] == first["order_id"] and again["client_order_id"] == "once"
    assert Order.objects.count() == 1
    with pytest.raises(errors.DuplicateClientOrderId):
        live.place_order("BTC-USD", "buy", "limit", price="20001", size="0.01", client_order_id="once")
    with pytest.raises(TypeError):
        live.place_order("BTC-USD", "buy", "limit", price=20000.0, size="0.01")


def test_the_wallet_methods_move_money_and_read_it_back(make_account, fund, make_key, in_process_http):
    from datetime import timedelta

    from django.utils import timezone

    from earn.models import EarnProduct
    from trading.models import Asset
    from wallets.models import WithdrawalAddress

    account = make_account()
    fund(account, "USD", "1000")
    bot = make_key(account, scope="trade_withdraw", ip_allowlist=["127.0.0.1"])
    client = Client("http://testserver", bot.key_id, bot.secret, http=in_process_http)

    moved = client.transfer("USD", "100", "spot", "margin", client_transfer_id="to-margin")
    again = client.transfer("USD", Decimal("100.00"), "spot", "margin", client_transfer_id="to-margin")
    assert again["transfer_id"] == moved["transfer_id"]
    assert [t["transfer_id"] for t in client.transfers(asset="USD")["results"]] == [moved["transfer_id"]]
    newest = client.ledger(asset="USD", wallet="margin")["results"][0]
    assert (newest["kind"], newest["amount"], newest["balance_after"]) == ("transfer", "100.00", "100.00")
    ledger = client.ledger(asset="USD")["results"]
    assert len(ledger) > 1 and client.ledger(asset="USD", sort="asc")["results"] == ledger[::-1]
    with pytest.raises(errors.InsufficientFunds):
        client.transfer("USD", "901", "spot", "earn")

    usd = Asset.objects.get(symbol="USD")
    usable = timezone.now() - timedelta(seconds=1)
    WithdrawalAddress.objects.create(account=account, asset=usd, address="US00BANK", created_at=usable,
                                     usable_from=usable)
    asked = client.withdraw("USD", "50", "US00BANK")
    assert client.get_withdrawal(asked["id"])["status"] == "pending_review"
    assert client.cancel_withdrawal(asked["id"])["status"] == "cancelled"
    assert client.cancel_withdrawal(asked["id"])["status"] == "cancelled"  # a retry changes nothing
    assert [w["id"] for w in client.withdrawals(status="cancelled")["results"]] == [asked["id"]]
    with pytest.raises(errors.WithdrawalAddressNotAllowed):
        client.withdraw("USD", "50", "US00ELSEWHERE")

    product = EarnProduct.objects.create(asset=usd, annual_rate=Decimal("0.05"), lock_days=0,
                                         min_amount=Decimal("10"), capacity=Decimal("10000"))
    assert [p["id"] for p in client.earn_products()] == [product.pk]
    subscription = client.subscribe(product.pk, "200")
    assert [s["subscription_id"] for s in client.subscriptions()["results"]] == [subscription["subscription_id"]]
    assert client.redeem(subscription["subscription_id"])["status"] == "redeemed"
    assert client.deposits()["results"] == []
    spot = next(row["spot"] for row in client.balances()["balances"] if row["asset"] == "USD")
    assert spot == {"available": "900.00", "locked": "0.00", "total": "900.00"}
    with pytest.raises(errors.NotFound):
        client.faucet("USD", "10")  # outside the sandbox


def test_cli_rebuilds_the_body_the_product_page_quick_start_passes(monkeypatch, capsys):
    from hkt_client import cli

    body = '{ "pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01" }'
    monkeypatch.setenv("HKT_SECRET", "s3cret")
    # What bash hands over for $(hkt_sign POST /v1/orders \"$BODY\" 1714521600000 7f3a1b8e):
    words = ('"' + body + '"').split(" ")

    assert cli.main(["POST", "/v1/orders", *words, "1714521600000", "7f3a1b8e"]) == 0
    split_signature = capsys.readouterr().out.strip()
    assert cli.main(["POST", "/v1/orders", body, "1714521600000", "7f3a1b8e"]) == 0

    expected = hmac.new(b"s3cret", f"1714521600000\n7f3a1b8e\nPOST\n/v1/orders\n{body}".encode(), hashlib.sha256)
    assert split_signature == capsys.readouterr().out.strip() == expected.hexdigest()


def test_batches_and_the_dead_mans_switch_on_the_server(live):
    from trading.models import Order

    orders = [{"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "20000", "size": "0.01"},
              {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": Decimal("20001"), "size": "0.01",
               "client_order_id": "py-2"}]

    placed = live.place_orders(orders)
    again = live.place_orders(orders[1:])
    cancelled = live.cancel_orders(client_order_ids=["py-2"])
    armed = live.cancel_all_after(60000, pair="BTC-USD")

    assert [item["status"] for item in placed["results"]] == [201, 201]
    assert placed["results"][0]["order"]["client_order_id"]  # generated, so that a retry is safe
    assert again["results"][0]["status"] == 200
    assert again["results"][0]["order"]["order_id"] == placed["results"][1]["order"]["order_id"]
    assert cancelled["results"][0]["order"]["cancel_requested"] is True  # matched only once committed
    assert armed["trigger_time"] == armed["current_time"] + 60000 and armed["pair"] == "BTC-USD"
    assert Order.objects.count() == 2
