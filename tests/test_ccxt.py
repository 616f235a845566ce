"""hkt_client.ccxt, the ccxt exchange class (issue 17).

In process, ccxt's own HTTP session (requests) is answered by this Django app: every error code maps to a
ccxt exception and refusals raise it, the signature ccxt sends is the one the server checks over the bytes
sent, and ccxt's order parameters become the server's order fields. On the production topology (slow):
ccxt's own unified-API test runner (``ccxt/test/tests_sync.py``, shipped in the wheel) and its test modules
against the class and a live server, and a scripted bot trading through ccxt with exact balances after."""

import importlib
import json
import re
import subprocess
import sys
import time
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from types import SimpleNamespace

import ccxt
import httpx
import pytest
import requests
from ccxt.base import errors as ccxt_errors
from ccxt.test.exchange import base as checks  # ccxt's structure checks: checks.test_order(exchange, ...)
from ccxt.test.exchange.base import test_shared_methods
from django.utils import timezone
from hkt_client import ccxt as ccxt_class
from hkt_client.ccxt import EXCEPTIONS, hkt

from accounts import keys
from exchange.errors import ErrorCode
from trading import services
from trading.models import Asset, Balance, Market, Order
from wallets.models import WithdrawalAddress

from .conftest import ledger_snapshot
from .processes import process_env, wait_until
from .test_python_client import in_process_http  # noqa: F401 (a fixture: the WSGI application over httpx)

D = Decimal
IN_PROCESS = pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the matcher runs on commit
SERVER = "http://testserver"


class WSGIAdapter(requests.adapters.BaseAdapter):
    """requests' transport (ccxt's session) handing each request to an httpx client that this process's WSGI
    application answers, so that everything above the socket is ccxt's own."""

    def __init__(self, http: httpx.Client):
        super().__init__()
        self.http = http

    def send(self, request, **kwargs):
        headers = {name: value for name, value in request.headers.items() if name.lower() != "content-length"}
        answer = self.http.request(request.method, request.url, headers=headers, content=request.body)
        response = requests.Response()
        response.status_code, response.reason = answer.status_code, answer.reason_phrase
        response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        response._content, response.url, response.request = answer.content, request.url, request
        return response

    def close(self):
        pass


@pytest.fixture
def connect(in_process_http):  # noqa: F811
    """A ccxt exchange instance on this process's server, for a key made by make_key (or none)."""

    def connect(key=None, **config) -> hkt:
        credentials = {} if key is None else {"apiKey": key.key_id, "secret": key.secret}
        exchange = hkt({**credentials, "enableRateLimit": False, "urls": {"api": {"rest": SERVER}}, **config})
        exchange.session.mount(SERVER, WSGIAdapter(in_process_http))
        return exchange

    return connect


@pytest.fixture
def trader(make_account, fund, make_key):
    """A funded account and its trade key."""

    def trader(scope="trade", **deposits):
        account = make_account()
        for asset, amount in deposits.items():
            fund(account, asset, amount)
        return account, make_key(account, scope=scope)

    return trader


# Errors and signing


def test_every_error_code_maps_to_a_ccxt_exception_class():
    exchange = hkt()

    assert set(exchange.exceptions["exact"]) == {code.value for code in ErrorCode}
    assert all(issubclass(cls, ccxt_errors.BaseError) for cls in EXCEPTIONS.values())
    # The classes bots branch on, for the codes they meet most.
    assert (EXCEPTIONS["INSUFFICIENT_FUNDS"], EXCEPTIONS["ORDER_NOT_FOUND"], EXCEPTIONS["UNKNOWN_PAIR"],
            EXCEPTIONS["RATE_LIMITED"], EXCEPTIONS["POST_ONLY_WOULD_TAKE"], EXCEPTIONS["MARKET_HALTED"]) == (
        ccxt_errors.InsufficientFunds, ccxt_errors.OrderNotFound, ccxt_errors.BadSymbol,
        ccxt_errors.RateLimitExceeded, ccxt_errors.OrderImmediatelyFillable, ccxt_errors.MarketClosed)


def test_ccxt_signs_what_it_sends_as_the_server_checks_it():
    exchange = hkt({"apiKey": "hkt_test_0123456789abcdef01234567", "secret": "s3cret"})
    post = exchange.sign("orders", "private", "POST", {"pair": "BTC-USD", "note": "café"})
    get = exchange.sign("orders", "private", "GET", {"status": "filled,cancelled", "pair": "BTC-USD"})

    for signed in (post, get):
        # As ccxt's fetch() sends it: the body encoded as UTF-8, the URL as requests prepares it.
        body = None if signed["body"] is None else signed["body"].encode()
        sent = requests.Request(signed["method"], signed["url"], data=body).prepare()
        headers = signed["headers"]
        message = keys.prehash(headers["X-Api-Timestamp"], headers["X-Api-Nonce"], signed["method"], sent.path_url,
                               sent.body or b"")
        assert headers["X-Api-Signature"] == keys.sign("s3cret", message)
    assert post["body"] == '{"pair":"BTC-USD","note":"café"}'
    assert get["url"] == "http://127.0.0.1:8000/v1/orders?status=filled%2Ccancelled&pair=BTC-USD"


def test_each_request_costs_its_endpoints_weight():
    cost = hkt().calculate_rate_limiter_cost

    assert [cost("private", "POST", "orders/batch", {"orders": [{}] * 7}, {"cost": 1}),
            cost("private", "POST", "orders/cancel", {"client_order_ids": ["a", "b"]}, {"cost": 1}),
            cost("private", "GET", "orders", {}, {"cost": 5})] == [7, 2, 5]
    assert [cost("public", "GET", "orderbook/{pair}", params, {"cost": 1})
            for params in ({}, {"depth": 500}, {"depth": 1000})] == [1, 5, 10]
    assert [cost("public", "GET", "candles/{pair}", params, {"cost": 1}) for params in (
        {"interval": "1m", "limit": 1000}, {"interval": "15m", "limit": 960}, {"interval": "1h"},
        {"interval": "1d", "limit": 1000})] == [1, 2, 5, 10]


@IN_PROCESS
def test_the_server_answers_ccxt_and_its_structures_pass_ccxts_checks(connect, trader):
    account, key = trader(USD="1000.50", BTC="0.25")
    exchange = connect(key)
    markets = exchange.load_markets()
    balance = exchange.fetch_balance()

    assert sorted(markets) == ["BTC/USD", "ETH/BTC", "ETH/USD"]
    for market in markets.values():
        checks.test_market(exchange, {}, "loadMarkets", market)
    for currency in exchange.currencies.values():
        checks.test_currency(exchange, {}, "fetchCurrencies", currency)
    assert (markets["BTC/USD"]["precision"], markets["BTC/USD"]["limits"]["cost"]["min"]) == (
        {"amount": 1e-08, "price": 0.01}, 1.0)
    assert (balance["USD"], balance["BTC"]["free"]) == ({"free": 1000.5, "used": 0.0, "total": 1000.5}, 0.25)
    assert exchange.fetch_balance({"type": "margin"})["USD"]["total"] == 0.0
    assert exchange.fetch_trading_fees()["BTC/USD"]["taker"] == 0.002


@IN_PROCESS
def test_ccxt_order_parameters_become_the_servers_order_fields(connect, trader):
    account, key = trader(USD="100000", BTC="1")
    exchange = connect(key)
    exchange.load_markets()

    def placed(side, type, amount, price=None, **params):
        order = exchange.create_order("BTC/USD", type, side, amount, price, params)
        checks.test_order(exchange, {}, "createOrder", order, "BTC/USD", exchange.milliseconds())
        row = Order.objects.get(pk=order["id"])
        return order, (row.type, row.side, row.trigger, row.stop_price, row.price, row.post_only, row.time_in_force)

    order, fields = placed("sell", "limit", 0.01, 59000, stopLossPrice=60000)
    assert fields == ("stop", "sell", "below", D("60000"), D("59000"), False, "GTC")
    assert (order["stopLossPrice"], order["takeProfitPrice"], order["triggerPrice"]) == (60000.0, None, 60000.0)
    order, fields = placed("sell", "market", 0.01, takeProfitPrice=70000)
    assert fields[:5] == ("stop", "sell", "above", D("70000"), None)
    assert (order["type"], order["takeProfitPrice"], order["stopLossPrice"]) == ("market", 70000.0, None)
    assert placed("buy", "limit", 0.01, 66000, stopLossPrice=65000)[1][2] == "above"
    assert placed("buy", "limit", 0.01, 54000, takeProfitPrice=55000)[1][2] == "below"
    assert placed("buy", "limit", 0.01, 54000, triggerPrice=55000, triggerDirection="descending")[1][2] == "below"
    assert placed("sell", "limit", 0.01, 71000, stopPrice=70000, triggerDirection="ascending")[1][2] == "above"
    assert placed("sell", "limit", 0.01, 59000, triggerPrice=60000)[1][2] == "below"  # the side's default
    assert placed("buy", "limit", 0.01, 50000, timeInForce="PO")[1][5:] == (True, "GTC")
    assert placed("buy", "limit", 0.01, 50000, postOnly=True)[1][5] is True
    # An IOC that meets nothing expires. ccxt's manual lists "expired" (and "rejected") among order statuses, and
    # its Binance class returns them, though ccxt's test_order takes only open, closed and canceled.
    ioc = exchange.create_order("BTC/USD", "limit", "buy", 0.01, 50000, {"timeInForce": "FOK"})
    assert (ioc["status"], ioc["timeInForce"], ioc["filled"], Order.objects.get(pk=ioc["id"]).time_in_force) == (
        "expired", "FOK", 0.0, "FOK")
    # ccxt rounds a price to the tick and truncates an amount to the lot, as every ccxt class does.
    order, _ = placed("buy", "limit", 0.123456789, 50000.004, clientOrderId="grid-7")
    assert (order["info"]["price"], order["info"]["size"], order["clientOrderId"]) == ("50000.00", "0.12345678",
                                                                                       "grid-7")
    assert exchange.fetch_order(None, "BTC/USD", {"clientOrderId": "grid-7"})["id"] == order["id"]
    order = exchange.create_market_buy_order_with_cost("BTC/USD", 25.5)
    assert (Order.objects.get(pk=order["id"]).funds, order["info"]["size"]) == (D("25.50"), None)
    with pytest.raises(ccxt_errors.InvalidOrder):
        exchange.create_order("BTC/USD", "limit", "buy", 0.01, 50000, {"postOnly": True, "timeInForce": "IOC"})


@IN_PROCESS
def test_a_batch_is_created_and_cancelled_item_by_item(connect, trader):
    account, key = trader(USD="1000")
    exchange = connect(key)
    exchange.load_markets()
    orders = exchange.create_orders([
        {"symbol": "BTC/USD", "type": "limit", "side": "buy", "amount": 0.01, "price": 50000},
        {"symbol": "BTC/USD", "type": "limit", "side": "buy", "amount": 1, "price": 50000},  # 50,000 USD: too much
        {"symbol": "ETH/USD", "type": "limit", "side": "buy", "amount": 0.1, "price": 2000,
         "params": {"clientOrderId": "eth-1"}},
    ])

    assert [order["status"] for order in orders] == ["open", "rejected", "open"]
    assert orders[1]["info"]["error"]["code"] == "INSUFFICIENT_FUNDS"
    assert orders[2]["clientOrderId"] == "eth-1"
    cancelled = exchange.cancel_orders([orders[0]["id"], "999999"])
    assert [order["status"] for order in cancelled] == ["canceled", None]
    assert cancelled[1]["info"]["error"]["code"] == "ORDER_NOT_FOUND"
    by_client_id = exchange.cancel_orders([], params={"clientOrderIds": ["eth-1"]})
    assert [(order["clientOrderId"], order["status"]) for order in by_client_id] == [("eth-1", "canceled")]
    assert Order.objects.filter(account=account, status="cancelled").count() == 2


@IN_PROCESS
def test_refusals_raise_the_mapped_ccxt_exception_and_write_nothing(connect, trader, make_key, btc_usd):
    account, key = trader(USD="1000", BTC="1")
    exchange = connect(key)
    exchange.load_markets()
    resting = exchange.create_order("BTC/USD", "limit", "sell", 0.01, 64000)

    def refused(exception, call, *args, **kwargs):
        before = ledger_snapshot(), Order.objects.count()
        with pytest.raises(exception) as raised:
            call(*args, **kwargs)
        assert (ledger_snapshot(), Order.objects.count()) == before
        return raised.value

    refused(ccxt_errors.InsufficientFunds, exchange.create_order, "BTC/USD", "limit", "buy", 1, 60000)
    refused(ccxt_errors.OrderNotFound, exchange.fetch_order, "999999")
    refused(ccxt_errors.BadSymbol, exchange.publicGetTickerPair, {"pair": "NOPE-USD"})
    error = refused(ccxt_errors.BadRequest, exchange.create_order, "BTC/USD", "limit", "buy", 0.01, 60000,
                    {"prize": "1"})
    assert "INVALID_REQUEST" in str(error)
    assert "INVALID_PARAMETER" in str(refused(ccxt_errors.BadRequest, exchange.fetch_orders, None, None, None,
                                              {"colour": "red"}))
    refused(ccxt_errors.DuplicateOrderId, exchange.create_order, "BTC/USD", "limit", "sell", 0.01, 64001,
            {"clientOrderId": resting["clientOrderId"]})
    refused(ccxt_errors.AuthenticationError, connect(key, secret="0" * 64).fetch_balance)
    refused(ccxt_errors.InvalidNonce, connect(key, options={"timeDifference": 60_000}).fetch_balance)
    corrected = connect(key, options={"timeDifference": 60_000, "adjustForTimeDifference": True})
    corrected.load_markets()  # measures the difference with GET /v1/time
    assert corrected.fetch_balance()["USD"]["total"] == 1000.0
    refused(ccxt_errors.PermissionDenied, connect(make_key(account, scope="read_only")).create_order,
            "BTC/USD", "limit", "buy", 0.01, 60000)
    refused(ccxt_errors.InvalidAddress, connect(make_key(account, scope="trade_withdraw", ip_allowlist=["127.0.0.1"]))
            .withdraw, "USD", 10, "US00NOWHERE")
    services.set_market_status(btc_usd.pk, Market.Status.HALTED)
    refused(ccxt_errors.MarketClosed, exchange.create_order, "BTC/USD", "limit", "buy", 0.01, 60000)
    services.set_market_status(btc_usd.pk, Market.Status.ONLINE)
    # A post-only order that would take is rejected by the matcher: it exists (status rejected), its hold released.
    balances = exchange.fetch_balance()["USD"]
    with pytest.raises(ccxt_errors.OrderImmediatelyFillable):
        exchange.create_order("BTC/USD", "limit", "buy", 0.01, 64000, {"postOnly": True})
    assert exchange.fetch_balance()["USD"] == balances
    # Cancelling an order that is over (filled, expired, rejected) is OrderNotFound, as ccxt's Coinbase Exchange
    # class has it; cancelling a cancelled one again answers it, cancelled.
    rejected = exchange.fetch_orders("BTC/USD", params={"status": "rejected"})
    assert [order["status"] for order in rejected] == ["rejected"]
    refused(ccxt_errors.OrderNotFound, exchange.cancel_order, rejected[0]["id"])
    assert [exchange.cancel_order(resting["id"])["status"] for _ in range(2)] == ["canceled", "canceled"]


# On the production topology: ccxt's own tests, and a bot.

CCXT_DIR = Path(ccxt.__file__).parent
# ccxt's runner for one exchange, as ``python ccxt/test/tests_init.py <id> --sync`` starts it: tests_init.py itself
# cannot be run here, as it first imports ccxt.pro's WebSocket tests, which need psutil (not a dependency of ccxt).
RUNNER = """
import sys
test_dir = sys.argv[1]
sys.argv = [test_dir + "/tests_init.py", "hkt", *sys.argv[2:]]
import ccxt
from hkt_client.ccxt import hkt
ccxt.hkt = hkt  # the runner makes its exchange by id from the ccxt module, as for ccxt's own classes
sys.path.insert(0, test_dir)
from tests_helpers import argvExchange, argvMethod, argvSymbol
from tests_sync import testMainClass
testMainClass().init(argvExchange, argvSymbol, argvMethod)
"""
# What the runner tests with a module of its own, given the class's `has`: every method it offers that ccxt
# has a test for (fetchOrder, cancelOrder and the wallet writes have none; they are exercised by the scenarios
# and the bot below).
RUNNER_TESTED = {
    "loadMarkets", "features", "afterConstruct", "fetchCurrencies", "fetchTicker", "fetchTickers", "fetchOHLCV",
    "fetchTrades", "fetchOrderBook", "fetchBalance", "fetchTradingFees", "fetchOrders", "fetchOpenOrders",
    "fetchClosedOrders", "fetchMyTrades", "fetchDeposits", "fetchWithdrawals", "fetchTransfers",
}
PAIR, SYMBOL = "BTC-USD", "BTC/USD"


def run_ccxt_runner(tmp: Path, settings: dict, *flags: str) -> str:
    """ccxt's own test runner (ccxt/test/tests_sync.py) on the class, in a process of its own; its output.

    The runner refuses to run from site-packages (it is meant for a checkout of ccxt's repository) and reads
    keys.json and skip-tests.json three folders above its own: so it runs from a folder that mirrors the
    installed package by links, with those two files beside it, ours saying that nothing is skipped."""
    mirror = tmp / "python" / "ccxt"
    (mirror / "test").mkdir(parents=True)
    for entry in CCXT_DIR.iterdir():
        if entry.name != "test":
            (mirror / entry.name).symlink_to(entry)
    for entry in (CCXT_DIR / "test").iterdir():
        (mirror / "test" / entry.name).symlink_to(entry)
    (tmp / "keys.json").write_text(json.dumps({"hkt": settings}))
    (tmp / "skip-tests.json").write_text(json.dumps({"hkt": {}}))
    result = subprocess.run([sys.executable, "-c", RUNNER, str(mirror / "test"), *flags], capture_output=True,
                            text=True, timeout=600, env=process_env(PYTHONPATH=str(tmp / "python")))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ccxt_test(method: str):
    """ccxt's test function for a unified method, as its runner finds it (tests_helpers.get_test_files_sync)."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower().replace("o_h_l_c_v", "ohlcv")
    return getattr(importlib.import_module(f"ccxt.test.exchange.sync.test_{name}"), f"test_{name}")


def connect_to(url: str, key: dict, **options) -> hkt:
    return hkt({"apiKey": key["key"], "secret": key["secret"], "urls": {"api": {"rest": url}}, "options": options})


def settled(exchange: hkt, order: dict, status: str) -> dict:
    """The order fetched again once the matcher has it in ``status`` (a create answers ``pending``, shown
    open, when the matcher takes over a second)."""
    return wait_until(lambda: (fetched := exchange.fetch_order(order["id"], order["symbol"]))["status"] == status
                      and fetched, what=f"order {order['id']} {status}")


def minimum_amount(market: dict, price: float) -> float:
    """The size ccxt's createOrder test places (tco_get_minimum_amount_for_limit_price): the market's minimum
    size, or its minimum cost at ``price``, plus a lot and 10 %, rounded up to the lot."""
    limits, lot = market["limits"], Decimal(str(market["precision"]["amount"]))
    amount = (max(limits["amount"]["min"], limits["cost"]["min"] / price) + market["precision"]["amount"]) * 1.1
    return float((Decimal(str(amount)) / lot).to_integral_value(ROUND_CEILING) * lot)


@pytest.fixture(scope="module")
def live(stack):
    """A server as in production, and an account that has used every part of it: a deposit, a filled, an open
    and a cancelled order, a transfer to margin and a withdrawal that was sent; BTC-USD has a book around its
    last trade. ccxt's runner finds more than five currencies, as it requires of an exchange."""
    stack.start_matcher(PAIR)
    stack.start_matcher("ETH-USD")
    url = stack.start_rest()
    stack.manage("shell", "-c", (
        "from datetime import timedelta; from django.utils import timezone; from trading.models import Asset; "
        "from wallets.models import AssetWalletSettings\n"
        "for symbol, name, places in [('USDT', 'Tether', 6), ('USDC', 'USD Coin', 6), ('SOL', 'Solana', 9)]:\n"
        "    Asset.objects.create(symbol=symbol, name=name, precision=places)\n"
        "AssetWalletSettings.objects.create(asset=Asset.objects.get(symbol='BTC'), withdraw_fee='0.0005', "
        "withdraw_minimum='0.001')"))
    maker_key = stack.create_trader("maker", "USD=500000", "BTC=5")
    bot_key = stack.create_trader("ccxt", "USD=100000", scope="trade_withdraw", allow=("127.0.0.1",))
    stack.manage("credit_deposit", "ccxt", "BTC", "0.5", "btc-network-tx-1")
    stack.manage("shell", "-c", (
        "from django.utils import timezone; from accounts.models import Account; from trading.models import Asset; "
        "from wallets.models import WithdrawalAddress; now = timezone.now(); "
        "WithdrawalAddress.objects.create(account=Account.objects.get(user__username='ccxt'), "
        "asset=Asset.objects.get(symbol='BTC'), address='bc1qccxtbot', created_at=now, usable_from=now)"))
    maker, bot = connect_to(url, maker_key), connect_to(url, bot_key)
    for side, price in [("sell", 63010), ("sell", 63100), ("buy", 62990), ("buy", 62900)]:
        settled(maker, maker.create_order(SYMBOL, "limit", side, 0.5, price), "open")
    settled(bot, bot.create_order(SYMBOL, "limit", "buy", 0.01, 63010), "closed")
    settled(bot, bot.create_order(SYMBOL, "limit", "buy", 0.01, 60000), "open")
    cancelled = bot.create_order(SYMBOL, "limit", "buy", 0.01, 59000)
    wait_until(lambda: bot.cancel_order(cancelled["id"])["status"] == "canceled")
    bot.transfer("BTC", 0.001, "spot", "margin")
    withdrawal = bot.withdraw("BTC", 0.002, "bc1qccxtbot")
    stack.manage("shell", "-c", "from wallets.withdrawals import approve_withdrawal, mark_sent; "
                 f"approve_withdrawal({withdrawal['id']}, 'op'); mark_sent({withdrawal['id']}, '0xfeed', 'op')")
    return SimpleNamespace(url=url, bot_key=bot_key, bot=bot)


@pytest.mark.slow
def test_ccxts_own_unified_api_tests_pass_on_a_live_server(live, tmp_path):
    # The account's deposits and withdrawals name a network (ccxt's test requires one): the API names none, so
    # the deployment says which its custody system uses, as options["currencyNetworks"] allows.
    settings = {"apiKey": live.bot_key["key"], "secret": live.bot_key["secret"], "urls": {"api": {"rest": live.url}},
                "options": {"currencyNetworks": {"BTC": "BTC"}}}
    output = run_ccxt_runner(tmp_path, settings, "--sync", "--private", "--fundedTests", "--info")
    lines = output.splitlines()

    def methods(marker: str) -> set[str]:
        return {line.split()[-1] for line in lines if line.startswith(marker)}

    assert methods("[INFO] TESTING DONE") == RUNNER_TESTED, output
    # Nothing skipped: only what the class does not offer, and methods of it that ccxt has no test module for.
    assert not [line for line in lines if "SKIPPED_TEST" in line or "NOT_SUPPORTED" in line or "[TEST_WARNING]" in line
                or "Authentication problem" in line], output
    assert not [method for method in methods("[INFO] UNSUPPORTED_TEST") if live.bot.has.get(method)], output
    assert methods("[INFO] UNIMPLEMENTED_TEST") == {"fetchTime", "cancelAllOrders", "fetchCanceledOrders"}, output
    # The one failure is ccxt's createOrder test, which cannot run in Python (transpiled from TypeScript, it adds
    # the float balance to a string) and fails before it places anything; its scenarios run in the next test.
    failures = [line for line in lines if line.startswith("[TEST_FAILURE]")]
    assert [line.split()[:3] for line in failures] == [["[TEST_FAILURE]", "hkt", "createOrder"],
                                                       ["[TEST_FAILURE]", "hkt", "PRIVATE_TESTS"]], output
    createorder = output[output.index(failures[0]):output.index(failures[1])]
    assert 'test_create_order.py", line 53, in test_create_order' in createorder
    assert '\nTypeError: can only concatenate str (not "float") to str\n' in createorder
    assert failures[1].endswith("Failed methods : createOrder")


@pytest.mark.slow
def test_ccxts_tests_the_runner_leaves_out_and_its_create_order_scenarios(live):
    exchange = live.bot
    exchange.load_markets()
    market = exchange.market(SYMBOL)
    ccxt_test("fetchL2OrderBook")(exchange, {}, SYMBOL)
    ccxt_test("fetchTradingFee")(exchange, {}, SYMBOL)
    # test_fetch_markets wants a dict of markets, as fetchMarkets returns in ccxt's TypeScript; in Python every
    # class returns a list (Exchange.fetch_markets). Its other checks, which take the list as it is, pass.
    markets = exchange.fetch_markets()
    assert isinstance(markets, list)
    with pytest.raises(AssertionError, match="fetchMarkets must return a dict"):
        ccxt_test("fetchMarkets")(exchange, {})
    for each in markets:
        checks.test_market(exchange, {}, "fetchMarkets", each)
    importlib.import_module("ccxt.test.exchange.sync.test_fetch_markets").detect_market_conflicts(exchange, markets)

    # ccxt's createOrder test fails in Python before it places an order (a float added to a string) ...
    create_order_module = importlib.import_module("ccxt.test.exchange.sync.test_create_order")
    open_before = exchange.fetch_open_orders(SYMBOL)
    with pytest.raises(TypeError, match=r'can only concatenate str \(not "float"\) to str'):
        create_order_module.test_create_order(exchange, {}, SYMBOL)
    assert exchange.fetch_open_orders(SYMBOL) == open_before
    # ... the order lookup its scenarios use indexes the exchange as a JavaScript object ...
    with pytest.raises(TypeError, match="not subscriptable"):
        test_shared_methods.fetch_order(exchange, SYMBOL, open_before[0]["id"], {})
    # ... and its order size asks decimal_to_precision to round up (2, ROUND_UP), which ccxt's Python refuses.
    best_bid, best_ask = test_shared_methods.fetch_best_bid_ask(exchange, "createOrder", SYMBOL)
    with pytest.raises(AssertionError):
        create_order_module.tco_get_minimum_amount_for_limit_price(exchange, market, best_bid)
    # Its two scenarios, with its checks and its size rounded up with Decimal. 1: a buy 4.5 % under the best bid
    # rests unfilled.
    price = best_bid / 1.045
    created = exchange.create_order(SYMBOL, "limit", "buy", minimum_amount(market, price), price)
    fetched = settled(exchange, created, "open")
    for order, strict in ((created, False), (fetched, True)):
        checks.test_order(exchange, {}, "createOrder", order, SYMBOL, exchange.milliseconds())
        test_shared_methods.assert_order_state(exchange, {}, "createOrder", order, "open", strict)
        test_shared_methods.assert_in_array(exchange, {}, "createOrder", order, "side", [None, "buy"])
    exchange.cancel_order(created["id"], SYMBOL)
    # 2: a buy 4.5 % over the best ask fills, and a market sell of what it bought closes the position.
    price = best_ask * 1.045
    amount = minimum_amount(market, price)
    entry = exchange.create_order(SYMBOL, "limit", "buy", amount, price)
    entry_fetched = settled(exchange, entry, "closed")
    checks.test_order(exchange, {}, "createOrder", entry, SYMBOL, exchange.milliseconds())
    create_order_module.tco_assert_filled_order(exchange, market, "createOrder", {}, entry_fetched, entry_fetched,
                                                "buy", amount)
    close = exchange.create_order(SYMBOL, "market", "sell", entry_fetched["filled"])
    close_fetched = settled(exchange, close, "closed")
    create_order_module.tco_assert_filled_order(exchange, market, "createOrder", {}, close_fetched, close_fetched,
                                                "sell", entry_fetched["filled"])


@pytest.mark.slow
def test_a_bot_trades_through_ccxt_and_the_balances_are_exact(live, stack):
    alice = connect_to(live.url, stack.create_trader("alice", "ETH=5", "USD=1000"))
    bob = connect_to(live.url, stack.create_trader("bob", "USD=10000"))
    symbol = "ETH/USD"

    # It loads the markets and the candles (none yet: nothing has traded).
    markets = alice.load_markets()
    assert (markets[symbol]["limits"]["amount"]["min"], markets[symbol]["precision"]["price"]) == (0.001, 0.01)
    minute = alice.milliseconds() // 60_000 * 60_000
    assert alice.fetch_ohlcv(symbol, "1m", since=minute - 60_000) == []

    # Alice rests a post-only ask with her own id and finds it by that id; another ask she cancels.
    ask = alice.create_order(symbol, "limit", "sell", 1, 3000, {"postOnly": True, "clientOrderId": "alice-ask-1"})
    assert settled(alice, ask, "open")["postOnly"] is True
    assert alice.fetch_order(None, symbol, {"clientOrderId": "alice-ask-1"})["id"] == ask["id"]
    spare = alice.create_order(symbol, "limit", "sell", 0.5, 3500)
    wait_until(lambda: alice.cancel_order(spare["id"], symbol)["status"] == "canceled")
    book = alice.fetch_order_book(symbol)
    assert (book["asks"], book["bids"]) == ([[3000.0, 1.0]], [])

    # Bob takes half of it.
    buy = bob.create_order(symbol, "limit", "buy", 0.5, 3000)
    bought = settled(bob, buy, "closed")
    sold = wait_until(lambda: (order := alice.fetch_order(ask["id"], symbol))["filled"] == 0.5 and order)
    assert (bought["average"], bought["cost"], bought["fee"]) == (3000.0, 1500.0, {"cost": 0.001, "currency": "ETH"})
    assert (sold["status"], sold["remaining"], sold["fee"]) == ("open", 0.5, {"cost": 1.5, "currency": "USD"})

    # Each sees the one trade from its side, with its fee; the fees are the tier's.
    now = alice.milliseconds()
    [alice_trade], [bob_trade] = alice.fetch_my_trades(symbol), bob.fetch_my_trades(symbol)
    assert (alice_trade["id"], alice_trade["order"], alice_trade["side"], alice_trade["takerOrMaker"]) == (
        bob_trade["id"], ask["id"], "sell", "maker")
    assert (bob_trade["order"], bob_trade["side"], bob_trade["takerOrMaker"]) == (buy["id"], "buy", "taker")
    assert (alice_trade["price"], alice_trade["amount"], alice_trade["cost"], bob_trade["fee"]) == (
        3000.0, 0.5, 1500.0, {"cost": 0.001, "currency": "ETH"})
    for trade in (alice_trade, bob_trade):
        checks.test_trade(alice, {}, "fetchMyTrades", trade, symbol, now, False)
    fees = alice.fetch_trading_fees()
    assert (fees[symbol]["maker"], fees[symbol]["taker"]) == (0.001, 0.002)
    checks.test_trading_fee(alice, {}, "fetchTradingFees", symbol, fees[symbol])
    [candle] = alice.fetch_ohlcv(symbol, "1m", since=minute)
    assert candle[1:] == [3000.0, 3000.0, 3000.0, 3000.0, 0.5]
    checks.test_ohlcv(alice, {}, "fetchOHLCV", candle, symbol, now)

    # Alice cancels the rest, and moves some of her dollars to her margin and earn wallets.
    wait_until(lambda: alice.cancel_order(ask["id"], symbol)["status"] == "canceled")
    assert [(order["id"], order["status"], order["filled"]) for order in alice.fetch_closed_orders(symbol)] == [
        (ask["id"], "canceled", 0.5), (spare["id"], "canceled", 0.0)]
    assert alice.fetch_open_orders(symbol) == []
    for wallet, amount in (("margin", 100), ("earn", 48.5)):
        moved = alice.transfer("USD", amount, "spot", wallet)
        checks.test_transfer(alice, {}, "transfer", moved, "USD")

    # Exact to the cent and the satoshi: the server's decimal strings, and ccxt's numbers made from them.
    def wallet(exchange, asset, kind="spot"):
        balance = exchange.fetch_balance({"type": kind})
        checks.test_balance(exchange, {}, "fetchBalance", balance)
        row = next(row[kind] for row in balance["info"]["balances"] if row["asset"] == asset)
        assert balance[asset] == {"free": float(row["available"]), "used": float(row["locked"]),
                                  "total": float(row["total"])}
        return row

    assert wallet(alice, "ETH") == {"available": "4.50000000", "locked": "0.00000000", "total": "4.50000000"}
    # 1,000 + 1,500 for the ETH less the maker fee of 0.1 % (1.50), less 148.50 moved to the other wallets.
    assert wallet(alice, "USD") == {"available": "2350.00", "locked": "0.00", "total": "2350.00"}
    assert wallet(alice, "USD", "margin")["total"] == "100.00"
    assert wallet(alice, "USD", "earn")["available"] == "48.50"
    assert wallet(bob, "USD") == {"available": "8500.00", "locked": "0.00", "total": "8500.00"}
    # 0.5 ETH less the taker fee of 0.2 %.
    assert wallet(bob, "ETH") == {"available": "0.49900000", "locked": "0.00000000", "total": "0.49900000"}
    assert stack.audit()["problems"] == []


@IN_PROCESS
def test_since_pages_forward_from_the_oldest_as_ccxts_own_pagination_reads(connect, trader):
    maker, taker = connect(trader(BTC="1")[1]), connect(trader(USD="100000")[1])
    for n in range(5):
        maker.create_order("BTC/USD", "limit", "sell", 0.1, 60000 + n)
        taker.create_order("BTC/USD", "limit", "buy", 0.1, 60000 + n)
        time.sleep(0.002)  # each trade in a millisecond of its own, as a `since = last + 1` loop needs
    trades = taker.fetch_trades("BTC/USD")
    fills = maker.fetch_my_trades("BTC/USD")
    orders = taker.fetch_orders("BTC/USD")
    assert [trade["price"] for trade in trades] == [60000, 60001, 60002, 60003, 60004] and len(fills) == len(orders) == 5

    # The oldest `limit` from `since`, not the newest: so ccxt's forward pagination reads every one once.
    for exchange, method, everything in ((taker, "fetchTrades", trades), (maker, "fetchMyTrades", fills),
                                         (taker, "fetchOrders", orders)):
        since = everything[1]["timestamp"]
        assert getattr(exchange, method)("BTC/USD", since, 2) == everything[1:3], method
        assert exchange.fetch_paginated_call_dynamic(
            method, "BTC/USD", since, None, {"paginationDirection": "forward"}, 2) == everything[1:], method
    # Without `since`, the newest `limit`.
    assert taker.fetch_trades("BTC/USD", None, 2) == trades[3:]
    # By id, for trades that share a millisecond (a matcher batch's): after the last one read.
    assert taker.fetch_trades("BTC/USD", None, 2, {"sort": "asc", "after": trades[0]["id"]}) == trades[1:3]


@IN_PROCESS
def test_until_is_the_last_millisecond_included_and_paginate_reads_a_batch_sharing_one(connect, trader,
                                                                                       monkeypatch):
    maker, taker = connect(trader(BTC="1")[1]), connect(trader(USD="100000")[1])
    for n in range(3):
        maker.create_order("BTC/USD", "limit", "sell", 0.1, 60000 + n)
        taker.create_order("BTC/USD", "limit", "buy", 0.1, 60000 + n)
        time.sleep(0.002)  # each trade in a millisecond of its own
    fills = maker.fetch_my_trades("BTC/USD")
    asks = [maker.create_order("BTC/USD", "limit", "sell", 0.1, 61000 + n) for n in range(3)]
    sweep = taker.create_order("BTC/USD", "market", "buy", 0.3)  # one batch: three fills of one millisecond

    # As ccxt means `until`: its own backward pagination asks for `until = first timestamp - 1`.
    assert maker.fetch_my_trades("BTC/USD", None, None, {"until": fills[1]["timestamp"]}) == fills[:2]
    assert taker.fetch_paginated_call_dynamic("fetchTrades", "BTC/USD", None, None,
                                              {"until": fills[2]["timestamp"]}, 1) == taker.fetch_trades("BTC/USD")[:3]
    minute = fills[0]["timestamp"] // 60_000 * 60_000
    assert [candle[0] for candle in maker.fetch_ohlcv("BTC/USD", "1m", None, 1, {"until": minute})] == [minute]

    # Pages of 2: `paginate` follows the server's cursor through the batch; its order's fills are all read.
    monkeypatch.setattr(ccxt_class, "MAX_PAGE", 2)
    batch = taker.fetch_my_trades("BTC/USD", fills[-1]["timestamp"] + 1, None, {"paginate": True})
    assert len(batch) == 3 and len({fill["timestamp"] for fill in batch}) == 1
    assert [fill["id"] for fill in taker.fetch_order_trades(sweep["id"], "BTC/USD")] == [fill["id"] for fill in batch]
    assert sorted(fill["order"] for fill in maker.fetch_my_trades("BTC/USD", batch[0]["timestamp"], None,
                                                                 {"paginate": True})) == sorted(a["id"] for a in asks)
    with pytest.raises(ccxt.BadRequest, match="page by trade id"):  # public trades page by id, not by cursor
        taker.fetch_trades("BTC/USD", None, 1, {"paginate": True})
    # An id no order can have: OrderNotFound, and nothing sent for the batch it was in.
    for call in (lambda: maker.cancel_orders([asks[0]["id"], "abc"]), lambda: maker.fetch_order_trades("abc"),
                 lambda: maker.cancel_orders(["123456789012345678901"])):
        with pytest.raises(ccxt.OrderNotFound):
            call()


@IN_PROCESS
def test_candles_page_by_a_thousand_and_the_account_wide_calls(connect, trader, make_key):
    maker_account, maker_key = trader(BTC="1", USD="100")
    maker, taker = connect(maker_key, fetchHistoryCacheSize=5), connect(trader(USD="100000")[1])
    ask = maker.create_order("BTC/USD", "limit", "sell", 0.3, 60000)
    taker.create_order("BTC/USD", "limit", "buy", 0.1, 60000)

    [fill] = maker.fetch_order_trades(ask["id"], "BTC/USD")
    assert (fill["amount"], fill["takerOrMaker"], fill["fee"]) == (0.1, "maker", {"cost": 6.0, "currency": "USD"})
    # 2,500 minutes from `since`: three pages, and the trade's candle once.
    minute = fill["timestamp"] // 60_000 * 60_000
    since = minute - 2_000 * 60_000
    assert maker.fetch_ohlcv("BTC/USD", "1m", since, 2_500) == [[minute, 60000.0, 60000.0, 60000.0, 60000.0, 0.1]]
    assert [entry["request"]["url"] for entry in maker.get_fetch_cache()][-3:] == [
        f"{SERVER}/v1/candles/BTC-USD?interval=1m&start={since + offset * 60_000}&limit={limit}"
        for offset, limit in ((0, 1000), (1000, 1000), (2000, 500))]
    # An `until` inside the first page: the pages past it are not asked for (the server refuses them).
    assert maker.fetch_ohlcv("BTC/USD", "1m", minute - 100 * 60_000, 1_500, {"until": minute + 60_000}) == [
        [minute, 60000.0, 60000.0, 60000.0, 60000.0, 0.1]]
    # Without `since`, the intervals up to the server's now, whatever our clock says once corrected.
    behind = connect(maker_key)
    clock = behind.milliseconds
    behind.milliseconds = lambda: clock() - 180_000  # three minutes behind the server's
    behind.load_time_difference()
    assert behind.fetch_ohlcv("BTC/USD", "1m", None, 1_000) == behind.fetch_ohlcv("BTC/USD", "1m", None, 1_500) == [
        [minute, 60000.0, 60000.0, 60000.0, 60000.0, 0.1]]
    with pytest.raises(ccxt.BadRequest, match="no timeframe '2h'"):  # a ccxt error, not a KeyError
        maker.fetch_ohlcv("BTC/USD", "2h")

    second = maker.create_order("BTC/USD", "limit", "sell", 0.1, 61000)
    assert sorted((order["id"], order["status"]) for order in maker.cancel_all_orders()) == [
        (ask["id"], "canceled"), (second["id"], "canceled")]
    assert [order["id"] for order in maker.fetch_canceled_orders("BTC/USD")] == [ask["id"], second["id"]]
    armed = maker.cancel_all_orders_after(60_000, {"symbol": "BTC/USD"})
    assert (armed["pair"], armed["timeout_ms"], armed["trigger_time"] - armed["current_time"]) == (
        "BTC-USD", 60_000, 60_000)
    assert maker.cancel_all_orders_after(0, {"symbol": "BTC/USD"})["trigger_time"] is None

    # A withdrawal asked through ccxt, and read back.
    usd = Asset.objects.get(symbol="USD")
    usable = timezone.now() - timedelta(seconds=1)
    WithdrawalAddress.objects.create(account=maker_account, asset=usd, address="US00BANK", created_at=usable,
                                     usable_from=usable)
    withdrawer = connect(make_key(maker_account, scope="trade_withdraw", ip_allowlist=["127.0.0.1"]))
    asked = withdrawer.withdraw("USD", 50, "US00BANK", params={"clientWithdrawalId": "w-1"})
    assert (asked["status"], asked["amount"], asked["addressTo"], asked["txid"], asked["info"]["client_withdrawal_id"]
            ) == ("pending", 50.0, "US00BANK", None, "w-1")
    assert withdrawer.fetch_withdrawal(asked["id"])["info"] == asked["info"]
    assert [each["id"] for each in withdrawer.fetch_withdrawals("USD")] == [asked["id"]]
    assert withdrawer.fetch_balance()["USD"]["used"] == 50.0


@IN_PROCESS
def test_a_bot_reconciles_every_open_order_and_moves_balances_to_the_last_digit(connect, trader, make_key,
                                                                               monkeypatch):
    account, key = trader(USD="1000", BTC="0.50000000032")  # fee dust, finer than BTC's 8 places
    bot = connect(key)
    placed = [bot.create_order("BTC/USD", "limit", "buy", 0.001, 1000 + n)["id"] for n in range(5)]

    # Without a limit, every open order, however many pages the server's lists take (2 a page here).
    monkeypatch.setattr(ccxt_class, "MAX_PAGE", 2)
    assert sorted(order["id"] for order in bot.fetch_open_orders("BTC/USD")) == sorted(placed)
    monkeypatch.undo()
    assert len(bot.fetch_open_orders("BTC/USD", None, 3)) == 3

    # The whole free balance moves: sent as given, not rounded up past it to the asset's precision.
    free = bot.fetch_balance()["BTC"]["free"]
    bot.transfer("BTC", free, "spot", "margin")
    assert sorted(Balance.objects.filter(account=account, asset__symbol="BTC").values_list(
        "wallet", "available", "locked")) == [("margin", D("0.50000000032"), 0), ("spot", 0, 0)]

    # A withdrawal's amount is truncated to the asset's precision; `tag` and another network are refused.
    usd = Asset.objects.get(symbol="USD")
    usable = timezone.now() - timedelta(seconds=1)
    WithdrawalAddress.objects.create(account=account, asset=usd, address="US00BANK", created_at=usable,
                                     usable_from=usable)
    withdrawer = connect(make_key(account, scope="trade_withdraw", ip_allowlist=["127.0.0.1"]),
                         options={"currencyNetworks": {"USD": "WIRE"}})
    asked = withdrawer.withdraw("USD", 10.019, "US00BANK", {"clientWithdrawalId": "w-2", "network": "WIRE"})
    assert (asked["info"]["amount"], asked["info"]["client_withdrawal_id"], asked["network"]) == ("10.01", "w-2", "WIRE")
    with pytest.raises(ccxt.NotSupported, match="takes no tag"):
        withdrawer.withdraw("USD", 10, "US00BANK", {"tag": "123"})
    with pytest.raises(ccxt.BadRequest, match="not SWIFT"):
        withdrawer.withdraw("USD", 10, "US00BANK", {"network": "SWIFT"})

    # An id no order or withdrawal can have is not found, as one that no longer exists: not "no such method".
    for call in (lambda: bot.fetch_order("abc"), lambda: bot.cancel_order("abc"),
                 lambda: bot.fetch_order(None, None, {"clientOrderId": "not allowed!"})):
        with pytest.raises(ccxt.OrderNotFound):
            call()
    with pytest.raises(EXCEPTIONS["WITHDRAWAL_NOT_FOUND"]):
        withdrawer.fetch_withdrawal("abc")
    assert bot.cancel_all_orders_after(60000.0)["timeout_ms"] == 60_000
