"""Every pair's ticker in one call, the best bid and ask sizes in every ticker, the assets with their
wallet settings, and the server time of a book snapshot (SPEC section 10)."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from exchange.fields import to_milliseconds
from trading.models import Asset
from wallets.models import AssetWalletSettings

from .conftest import trader_fixture
from .test_python_client import Client, in_process_http  # noqa: F401  the fixture, taken by name below
from .test_streams import connect, op, place, receive, run

D = Decimal
maker = trader_fixture("maker", USD="10000000", BTC="1000", ETH="1000")
taker = trader_fixture("taker", USD="10000000", BTC="1000")


@pytest.fixture
def print_trade(trade, maker, taker):
    """A BTC-USD trade: the maker rests, the taker takes it whole."""

    def print_trade(price: str, size: str, taker_side: str = "buy"):
        trade(maker, side="sell" if taker_side == "buy" else "buy", type="limit", price=D(price), size=D(size))
        trade(taker, side=taker_side, type="market", size=D(size), time_in_force="IOC")

    return print_trade


def without_time(ticker: dict) -> dict:
    return {name: value for name, value in ticker.items() if name != "time"}


def test_tickers_are_every_pairs_ticker_with_the_best_sizes(api, print_trade, trade, maker):
    print_trade("60000", "0.5")
    print_trade("63000", "0.1", taker_side="sell")
    for side, price, size in [("buy", "62999.99", "1"), ("buy", "62999.99", "0.25"), ("buy", "62000", "3"),
                              ("sell", "63000.01", "0.4")]:  # 62,999.99: the level's size is both orders'
        trade(maker, side=side, type="limit", price=D(price), size=D(size))
    trade(maker, pair="ETH-USD", side="sell", type="limit", price=D("3000"), size=D("2"))

    tickers = api.get("/v1/tickers").json()
    one_by_one = [api.get(f"/v1/ticker/{pair}").json() for pair in ("BTC-USD", "ETH-BTC", "ETH-USD")]

    assert [ticker["pair"] for ticker in tickers] == ["BTC-USD", "ETH-BTC", "ETH-USD"]
    assert [without_time(ticker) for ticker in tickers] == [without_time(ticker) for ticker in one_by_one]
    btc = tickers[0]
    assert (btc["best_bid"], btc["best_bid_size"]) == ("62999.99", "1.25000000")
    assert (btc["best_ask"], btc["best_ask_size"]) == ("63000.01", "0.40000000")
    assert (btc["last_price"], btc["open_24h"], btc["volume_24h"]) == ("63000.00", "60000.00", "0.60000000")
    eth = tickers[2]
    assert (eth["best_bid"], eth["best_bid_size"], eth["best_ask"], eth["best_ask_size"]) == (
        None, None, "3000.00", "2.0000")  # ETH-USD's lot is 0.0001
    assert eth["last_price"] is None and eth["volume_24h"] == "0.0000"
    assert all(isinstance(ticker["time"], int) for ticker in tickers)


def test_all_tickers_are_one_query_however_many_pairs(api, markets):
    with CaptureQueriesContext(connection) as queries:
        tickers = api.get("/v1/tickers").json()

    assert len(tickers) == 3
    tables = ('"trading_market"', '"trading_trade"', '"trading_booklevel"', '"trading_candle"')
    reads = [q["sql"] for q in queries.captured_queries if any(table in q["sql"] for table in tables)]
    assert len(reads) == 1 and all(table in reads[0] for table in tables)


def test_tickers_spend_their_weight(api, markets):
    before = int(api.get("/v1/time")["X-RateLimit-Remaining"])
    after = int(api.get("/v1/tickers")["X-RateLimit-Remaining"])

    assert before - after == 2


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_ticker_channel_carries_the_best_sizes(markets, funded):
    seller = funded("seller", BTC="10")

    async def body():
        await place(seller, side="sell", type="limit", price=D("63100"), size=D("0.7"))
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "ticker", "pair": "BTC-USD"}])
        ticker = await receive(ws, "ticker")
        await ws.disconnect()
        return ticker

    ticker = run(body)

    assert (ticker["best_ask"], ticker["best_ask_size"]) == ("63100.00", "0.70000000")
    assert ticker["best_bid"] is None and ticker["best_bid_size"] is None


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_book_snapshot_on_the_socket_carries_its_server_time(markets):
    async def body():
        ws = await connect()
        before = to_milliseconds(timezone.now())
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD"}])
        snapshot = await receive(ws, "snapshot")
        after = to_milliseconds(timezone.now())
        await ws.disconnect()
        return before, snapshot, after

    before, snapshot, after = run(body)

    assert before <= snapshot["timestamp"] <= after


def test_assets_carry_their_wallet_settings_or_the_defaults(api, markets):
    btc = Asset.objects.get(symbol="BTC")
    AssetWalletSettings.objects.create(asset=btc, deposit_enabled=True, withdraw_enabled=False,
                                       withdraw_minimum=D("0.001"), withdraw_fee=D("0.0005"))

    assets = api.get("/v1/assets").json()

    by_symbol = {asset["symbol"]: asset for asset in assets}
    assert [asset["symbol"] for asset in assets] == sorted(by_symbol)
    assert set(by_symbol) == set(Asset.objects.values_list("symbol", flat=True))
    assert by_symbol["BTC"] == {"symbol": "BTC", "name": btc.name, "precision": 8, "deposit_enabled": True,
                                "withdraw_enabled": False, "withdraw_fee": "0.00050000", "withdraw_min": "0.00100000"}
    assert by_symbol["USD"] == {"symbol": "USD", "name": Asset.objects.get(symbol="USD").name, "precision": 2,
                                "deposit_enabled": True, "withdraw_enabled": True, "withdraw_fee": "0.00",
                                "withdraw_min": "0.00"}


@pytest.mark.parametrize("path", ["/v1/tickers?pair=BTC-USD", "/v1/assets?symbol=BTC"])
def test_the_lists_take_no_parameters(api, markets, path):
    response = api.get(path)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_PARAMETER"


def test_the_python_client_reads_tickers_candles_and_assets(request, print_trade):
    print_trade("63000", "0.1")
    client = Client("http://testserver", http=request.getfixturevalue("in_process_http"))

    assert [ticker["pair"] for ticker in client.tickers()] == ["BTC-USD", "ETH-BTC", "ETH-USD"]
    assert [row[4:] for row in client.candles("BTC-USD", "1m", limit=5)] == [
        ["63000.00", "0.10000000", "6300.0000000000", 1]]
    assert client.candles("BTC-USD", "1d", start=0, end=1) == []
    assert {asset["symbol"] for asset in client.assets()} == set(Asset.objects.values_list("symbol", flat=True))
