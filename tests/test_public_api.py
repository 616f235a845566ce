from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from exchange.fields import to_milliseconds
from marketdata import services
from marketdata.api.serializers import TickerSerializer, ticker_data
from trading.models import Market, Trade

from .conftest import trader_fixture

maker = trader_fixture("maker", USD="10000000", BTC="1000")
taker = trader_fixture("taker", USD="10000000", BTC="1000")


@pytest.fixture
def rest(trade, maker):
    """Rest a limit order on the BTC-USD book."""

    def rest(side, price, size):
        return trade(maker, side=side, type="limit", price=Decimal(price), size=Decimal(size))

    return rest


@pytest.fixture
def print_trade(trade, maker, taker):
    """A trade at ``price``: the maker rests, the taker crosses it; ``ago`` back-dates it for 24 h windows."""

    def print_trade(price, size, taker_side="buy", ago=timedelta(0)):
        maker_side = "sell" if taker_side == "buy" else "buy"
        with pytest.MonkeyPatch.context() as clock:
            if ago:  # the exchange's clock set back: the trade and its minute's candle are stamped then
                at = timezone.now() - ago
                clock.setattr(timezone, "now", lambda: at)
            trade(maker, side=maker_side, type="limit", price=Decimal(price), size=Decimal(size))
            trade(taker, side=taker_side, type="market", size=Decimal(size), time_in_force="IOC")
        return Trade.objects.latest("id")

    return print_trade


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert "Traceback" not in response.content.decode()


def test_time_is_close_to_server_clock(api, db):
    before = to_milliseconds(timezone.now())
    response = api.get("/v1/time")
    after = to_milliseconds(timezone.now())

    assert response.status_code == 200
    assert before <= response.json()["time"] <= after


def test_markets_lists_pairs_with_grid_as_decimal_strings(api, markets):
    Market.objects.filter(pair="ETH-BTC").update(status=Market.Status.HALTED)

    response = api.get("/v1/markets")

    assert response.status_code == 200
    by_pair = {m["pair"]: m for m in response.json()}
    assert set(by_pair) == {"BTC-USD", "ETH-USD", "ETH-BTC"}
    assert by_pair["BTC-USD"] == {
        "pair": "BTC-USD", "base": "BTC", "quote": "USD", "status": "online",
        "tick_size": "0.01", "lot_size": "0.00000001", "min_size": "0.00001", "min_notional": "1.00",
        "maker_fee": "0.001", "taker_fee": "0.002",
    }
    assert by_pair["ETH-BTC"]["status"] == "halted"


def test_orderbook_is_empty_before_any_order(api, btc_usd):
    before = to_milliseconds(timezone.now())
    response = api.get("/v1/orderbook/BTC-USD")
    after = to_milliseconds(timezone.now())

    assert response.status_code == 200
    body = response.json()
    assert before <= body.pop("timestamp") <= after  # the server time of the snapshot
    assert body == {"pair": "BTC-USD", "sequence": 0, "bids": [], "asks": []}


def test_orderbook_shows_committed_levels_best_first_on_the_market_grid(api, rest):
    for side, price, size in [("buy", "62990", "1"), ("buy", "63000", "0.5"), ("sell", "63010.5", "2"),
                              ("sell", "63005", "0.25"), ("buy", "63000", "0.25")]:
        rest(side, price, size)

    body = api.get("/v1/orderbook/BTC-USD?depth=1").json()

    assert isinstance(body.pop("timestamp"), int)
    assert body == {"pair": "BTC-USD", "sequence": 5, "bids": [["63000.00", "0.75000000"]],
                    "asks": [["63005.00", "0.25000000"]]}
    full = api.get("/v1/orderbook/btc-usd").json()
    assert [p for p, _ in full["bids"]] == ["63000.00", "62990.00"]
    assert [p for p, _ in full["asks"]] == ["63005.00", "63010.50"]


def test_orderbook_depth_defaults_to_and_is_capped_at_100(api, rest):
    for i in range(101):
        rest("buy", str(60000 - i), "0.001")

    assert len(api.get("/v1/orderbook/BTC-USD").json()["bids"]) == 100
    assert len(api.get("/v1/orderbook/BTC-USD?depth=100").json()["bids"]) == 100


@pytest.mark.parametrize("depth", ["abc", "0", "-1", "1.5", "1001"])
def test_orderbook_rejects_bad_depth(api, btc_usd, depth):
    assert_error(api.get(f"/v1/orderbook/BTC-USD?depth={depth}"), 400, "INVALID_PARAMETER")


def test_orderbook_deeper_than_100_needs_a_verified_account(api, btc_usd):
    response = api.get("/v1/orderbook/BTC-USD?depth=101")

    assert_error(response, 403, "DEPTH_REQUIRES_VERIFICATION")
    assert response.json()["error"]["details"] == {"max_depth": 100}


@pytest.mark.parametrize("path", ["/v1/orderbook/DOGE-USD", "/v1/ticker/DOGE-USD", "/v1/trades/DOGE-USD",
                                  "/v1/orderbook/nonsense",
                                  "/v1/ticker/btc-u%C5%BFd"])  # "ſ".upper() is "S": not a pair's name in any case
def test_unknown_pair_is_404_unknown_pair(api, markets, path):
    response = api.get(path)

    assert_error(response, 404, "UNKNOWN_PAIR")
    assert "pair" in response.json()["error"]["details"]


@pytest.mark.parametrize("method,path", [("post", "/v1/markets"), ("delete", "/v1/orderbook/BTC-USD"),
                                         ("put", "/v1/ticker/BTC-USD"), ("post", "/v1/time")])
def test_wrong_method_is_405(api, markets, method, path):
    assert_error(getattr(api, method)(path), 405, "METHOD_NOT_ALLOWED")


def test_unknown_endpoint_is_json_404(api, db):
    assert_error(api.get("/v1/no-such-thing"), 404, "NOT_FOUND")


def test_ticker_without_trades_has_nulls_and_zero_volume(api, btc_usd):
    body = api.get("/v1/ticker/BTC-USD").json()

    assert body["pair"] == "BTC-USD"
    assert body["last_price"] is None and body["open_24h"] is None and body["market_cap"] is None
    assert body["volume_24h"] == "0.00000000"
    assert isinstance(body["time"], int)


def test_ticker_24h_statistics_and_market_cap(api, print_trade, rest):
    print_trade("50000", "9", ago=timedelta(hours=25))  # outside the window
    print_trade("60000", "0.5", ago=timedelta(hours=23))
    print_trade("66000", "0.25", ago=timedelta(hours=2))
    print_trade("63000", "0.1", taker_side="sell")
    rest("buy", "62999.99", "1")
    rest("sell", "63000.01", "1")

    body = api.get("/v1/ticker/BTC-USD").json()

    assert body["last_price"] == "63000.00"
    assert body["last_size"] == "0.10000000"
    assert body["best_bid"] == "62999.99" and body["best_ask"] == "63000.01"
    assert body["open_24h"] == "60000.00"
    assert body["high_24h"] == "66000.00" and body["low_24h"] == "60000.00"
    assert body["change_24h"] == "3000.00"
    assert body["change_24h_pct"] == "5.00"
    assert body["volume_24h"] == "0.85000000"
    assert Decimal(body["quote_volume_24h"]) == Decimal("30000") + Decimal("16500") + Decimal("6300")
    assert body["market_cap"] == "1247400000000.00"  # 63,000 × 19,800,000 BTC, at USD precision


def test_a_pairs_ticker_is_read_afresh_as_its_window_slides_and_renders_as_its_serializer(print_trade, rest,
                                                                                          monkeypatch):
    """The one-pair read is compiled once: each call fills in its own pair and window start."""
    print_trade("60000", "0.5", ago=timedelta(hours=23, minutes=30))
    print_trade("63000", "0.1")
    rest("sell", "63000.01", "1")
    btc = Market.objects.with_assets().get(pair="BTC-USD")
    assert services.ticker(Market.objects.get(pair="ETH-USD")).last_price is None

    now = services.ticker(btc)
    an_hour_on = timezone.now() + timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: an_hour_on)
    later = services.ticker(btc)

    assert (now.open_24h, now.volume_24h, now.last_price) == (60000, Decimal("0.6"), 63000)
    assert (later.open_24h, later.volume_24h, later.last_price) == (63000, Decimal("0.1"), 63000)
    assert later.best_ask == Decimal("63000.01")
    for ticker in (now, later):
        assert ticker_data(ticker) == TickerSerializer(ticker, context={"market": btc}).data


def test_trades_newest_first_with_paging(api, print_trade):
    first = print_trade("63000", "0.1")
    second = print_trade("63001", "0.2", taker_side="sell")

    body = api.get("/v1/trades/BTC-USD").json()

    assert body["pair"] == "BTC-USD"
    assert [t["trade_id"] for t in body["trades"]] == [second.id, first.id]
    assert body["trades"][0] == {"trade_id": second.id, "price": "63001.00", "size": "0.20000000",
                                 "taker_side": "sell", "time": to_milliseconds(second.executed_at)}
    older = api.get(f"/v1/trades/BTC-USD?before={second.id}").json()["trades"]
    assert [t["trade_id"] for t in older] == [first.id]


def test_trades_oldest_first_from_a_windows_start_page_forward_with_after(api, print_trade):
    early = print_trade("63000", "0.1", ago=timedelta(minutes=10))
    inside = [print_trade(str(63001 + n), "0.1", ago=timedelta(minutes=5 - n)) for n in range(3)]
    since = to_milliseconds(inside[0].executed_at)

    def page(query):
        return [t["trade_id"] for t in api.get(f"/v1/trades/BTC-USD?{query}").json()["trades"]]

    # The window's oldest two, not its newest two: what a client that polls from `since` onwards needs.
    assert page(f"sort=asc&start_time={since}&limit=2") == [inside[0].id, inside[1].id]
    assert page(f"sort=asc&start_time={since}&limit=2&after={inside[1].id}") == [inside[2].id]
    assert page(f"sort=desc&start_time={since}&limit=2") == [inside[2].id, inside[1].id]
    assert page("sort=asc") == [early.id] + [trade.id for trade in inside]
    assert page(f"after={inside[0].id}") == [inside[2].id, inside[1].id]  # the filter works in either order
    assert page(f"sort=asc&after={early.id}&before={inside[2].id}") == [inside[0].id, inside[1].id]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "before=0", "after=-1", "sort=up", "sort=ASC"])
def test_trades_rejects_bad_paging(api, btc_usd, query):
    assert_error(api.get(f"/v1/trades/BTC-USD?{query}"), 400, "INVALID_PARAMETER")
