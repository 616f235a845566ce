"""Candles (SPEC section 10): GET /v1/candles/{pair} aggregates the matcher's per-minute candles into
each interval, and the candles WebSocket channel sends the current candle, its updates and each closed one."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.fields import to_milliseconds
from marketdata import publishing, streams
from marketdata.candles import INTERVALS, candle_at
from marketdata.hub import hub_for
from trading.backends import store
from trading.batch_writer import BatchResult, BookDelta
from trading.candles import batch_candle, candle_statement
from trading.models import Candle, Trade
from trading.settlement import TradeRecord

from .conftest import trader_fixture
from .test_public_api import assert_error
from .test_streams import connect, op, place, receive, run

D = Decimal
maker = trader_fixture("maker", USD="10000000", BTC="1000")
taker = trader_fixture("taker", USD="10000000", BTC="1000")
# A Monday 23:50 UTC: the minutes below cross every interval's boundary, the day's included.
BASE = datetime(2026, 3, 2, 23, 50, tzinfo=UTC)
BASE_MS = to_milliseconds(BASE)


@pytest.fixture
def clock(monkeypatch):
    """Set the exchange's clock: the matcher stamps trades, and their minute's candle, with it."""

    def set_to(at: datetime) -> None:
        monkeypatch.setattr(timezone, "now", lambda: at)

    return set_to


@pytest.fixture
def print_trade(trade, maker, taker, clock):
    """A trade at ``price`` and ``size``, matched at ``at``."""

    def print_trade(at: datetime, price: str, size: str, taker_side: str = "buy"):
        clock(at)
        maker_side = "sell" if taker_side == "buy" else "buy"
        trade(maker, side=maker_side, type="limit", price=D(price), size=D(size))
        trade(taker, side=taker_side, type="market", size=D(size), time_in_force="IOC")

    return print_trade


def expected_candles(trades: list[tuple[int, Decimal, Decimal]], interval: str) -> list[list]:
    """The candles of (time ms, price, size) trades in time order, computed from the trades alone:
    [time, open, high, low, close, volume, quote_volume, trade_count] with Decimal values."""
    step = INTERVALS[interval] * 1000
    candles: dict[int, list] = {}
    for at, price, size in trades:
        start = at - at % step
        if start not in candles:
            candles[start] = [start, price, price, price, price, D(0), D(0), 0]
        candle = candles[start]
        candle[2], candle[3], candle[4] = max(candle[2], price), min(candle[3], price), price
        candle[5], candle[6], candle[7] = candle[5] + size, candle[6] + price * size, candle[7] + 1
    return [candles[start] for start in sorted(candles)]


def as_values(rows: list[list]) -> list[list]:
    """API rows with their decimal strings as Decimals (to compare with expected_candles)."""
    return [[row[0], *(D(value) for value in row[1:7]), row[7]] for row in rows]


def get_candles(api, query: str, pair: str = "BTC-USD") -> list[list]:
    response = api.get(f"/v1/candles/{pair}?{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_trades_through_the_matcher_make_the_candles_of_every_interval(api, print_trade):
    for minutes, price, size in [(0, "63000.00", "0.5"), (0.5, "63100.50", "0.25"), (1.2, "62900.01", "1"),
                                 (4.9, "63050.00", "0.1"), (10.1, "64000.00", "2"), (10.2, "63999.99", "0.001")]:
        print_trade(BASE + timedelta(minutes=minutes), price, size)
    trades = [(to_milliseconds(t.executed_at), t.price, t.size) for t in Trade.objects.order_by("id")]

    for interval in INTERVALS:
        rows = get_candles(api, f"interval={interval}&start={BASE_MS - BASE_MS % (INTERVALS[interval] * 1000)}")
        assert as_values(rows) == expected_candles(trades, interval), interval
    # 23:50, 23:51, 23:54 and 00:00 have trades; the minutes between have no candle.
    assert [row[0] for row in get_candles(api, f"interval=1m&start={BASE_MS}")] == [
        BASE_MS, BASE_MS + 60_000, BASE_MS + 4 * 60_000, BASE_MS + 10 * 60_000]
    first = get_candles(api, f"interval=5m&start={BASE_MS}")[0]
    assert first == [BASE_MS, "63000.00", "63100.50", "62900.01", "63050.00", "1.85000000", "116480.1350000000", 4]
    assert [row[0] for row in get_candles(api, f"interval=1d&start={BASE_MS - 86_400_000}")] == [
        to_milliseconds(datetime(2026, 3, 2, tzinfo=UTC)), to_milliseconds(datetime(2026, 3, 3, tzinfo=UTC))]


batches = st.lists(
    st.tuples(
        st.integers(0, 3 * 86_400 - 1),  # seconds after the start of a day
        st.lists(st.tuples(st.integers(1, 10**7), st.integers(1, 10**9)), min_size=1, max_size=3),  # ticks, lots
    ),
    min_size=1, max_size=30,
)
pages = st.tuples(st.sampled_from(list(INTERVALS)), st.one_of(st.none(), st.integers(0, 4 * 86_400_000)),
                  st.one_of(st.none(), st.integers(0, 4 * 86_400_000)), st.integers(1, 1000))


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches, page=pages)
def test_any_page_of_any_interval_is_the_trades_of_its_intervals(api, btc_usd, clock, batches, page):
    """Batches written as the matcher writes them (trading.candles, in time order): each page holds, oldest
    first, the candles of the intervals it spans, as computed from the trades alone."""
    Candle.objects.filter(market=btc_usd).delete()
    day = datetime(2026, 3, 1, tzinfo=UTC)
    trades = []
    for seconds, fills in sorted(batches, key=lambda batch: batch[0]):
        at = day + timedelta(seconds=seconds, milliseconds=seconds % 1000)
        done = [(ticks * btc_usd.tick_size, lots * btc_usd.lot_size) for ticks, lots in fills]
        store().execute([candle_statement(batch_candle(btc_usd.pk, at, [(p, s, p * s) for p, s in done]))])
        trades += [(to_milliseconds(at), price, size) for price, size in done]
    interval, start, end, limit = page
    if start is not None and end is not None and end < start:
        start, end = end, start
    now = day + timedelta(days=3, hours=12)
    clock(now)
    query = "&".join(f"{name}={value}" for name, value in
                     [("interval", interval), ("start", start), ("end", end), ("limit", limit)] if value is not None)

    with override_settings(PUBLIC_WEIGHT_PER_MINUTE=10**9):  # many examples, each a request
        rows = get_candles(api, query)

    step = INTERVALS[interval] * 1000
    first = -(-start // step) * step if start is not None else None
    last = -(-end // step) * step if end is not None else to_milliseconds(now) - to_milliseconds(now) % step + step
    if first is None:
        first = last - limit * step
    wanted = [c for c in expected_candles(trades, interval)
              if first <= c[0] < min(last, first + limit * step)]
    assert as_values(rows) == wanted


def test_a_page_without_start_ends_with_the_current_interval_and_pages_go_by_time(api, print_trade):
    print_trade(BASE - timedelta(hours=3), "62000.00", "1")
    print_trade(BASE, "63000.00", "1")
    print_trade(BASE + timedelta(seconds=30), "63500.00", "1")  # the clock is now here

    latest = get_candles(api, "interval=1m&limit=2")
    hour = get_candles(api, "interval=1h&limit=4")
    before = get_candles(api, f"interval=1h&end={to_milliseconds(BASE - timedelta(hours=1))}")
    paged = get_candles(api, f"interval=1m&start={BASE_MS - 3 * 3_600_000}&limit=60")

    assert [row[0] for row in latest] == [BASE_MS]  # the minute before has no trade
    assert latest[0][4] == "63500.00" and latest[0][7] == 2
    assert [row[0] for row in hour] == [BASE_MS - 3 * 3_600_000 - 50 * 60_000, BASE_MS - 50 * 60_000]
    assert [row[0] for row in before] == [BASE_MS - 3 * 3_600_000 - 50 * 60_000]
    assert [row[0] for row in paged] == [BASE_MS - 3 * 3_600_000]  # the next 60 minutes hold nothing more


def test_a_pair_without_trades_has_no_candles_and_an_unknown_pair_is_404(api, markets):
    assert get_candles(api, "interval=1d") == []
    assert_error(api.get("/v1/candles/NOPE-USD?interval=1m"), 404, "UNKNOWN_PAIR")


@pytest.mark.parametrize("query,parameter", [
    ("", "interval"),
    ("interval=2m", "interval"),
    ("interval=1M", "interval"),
    ("interval=1m&limit=0", "limit"),
    ("interval=1m&limit=1001", "limit"),
    ("interval=1m&limit=x", "limit"),
    ("interval=1m&start=-1", "start"),
    ("interval=1m&start=1.5", "start"),
    ("interval=1m&end=99999999999999999", "end"),
    ("interval=1m&start=2000&end=1000", "end"),
    ("interval=1m&since=1000", "since"),
])
def test_a_bad_query_is_400_naming_the_parameter(api, markets, query, parameter):
    response = api.get(f"/v1/candles/BTC-USD?{query}")

    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["details"]["parameter"] == parameter


def test_the_weight_grows_with_the_minutes_a_page_spans(api, markets):
    def spent(query: str) -> int:
        before = int(api.get("/v1/time")["X-RateLimit-Remaining"])
        after = int(api.get(f"/v1/candles/BTC-USD?{query}")["X-RateLimit-Remaining"])
        return before - after

    assert [spent("interval=1m"), spent("interval=5m&limit=1000"), spent("interval=1h&limit=500"),
            spent("interval=1d")] == [1, 2, 5, 10]


# The candles channel

sockets = pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the consumer reads what was committed


def traded_batch(market, at: datetime, trades: list[tuple[str, str]], sequence: int) -> BatchResult:
    """A batch as the matcher announces it, its minute's candle written as the matcher writes it."""
    records = [TradeRecord(i, D(price), D(size), "buy", at) for i, (price, size) in enumerate(trades, 1)]
    store().execute([candle_statement(batch_candle(market.pk, at, [(r.price, r.size, r.price * r.size)
                                                                    for r in records]))])
    return BatchResult(market=market, commands=0, states={}, orders=[], fills=[], trades=records,
                       delta=BookDelta(sequence=sequence, bids=[], asks=[], top_bids=[], top_asks=[]))


@pytest.mark.django_db
def test_after_the_clock_steps_back_the_published_candle_is_the_one_get_candles_gives(btc_usd):
    """A batch stamped a minute before the last one (the matcher's clock stepped back), in the same 5-minute
    interval: the interval's close stays the latest minute's, as GET /v1/candles has it."""

    publishing.candle_updates(btc_usd, traded_batch(btc_usd, BASE, [("63000", "1")], sequence=1))  # 23:50
    publishing.candle_updates(btc_usd, traded_batch(btc_usd, BASE + timedelta(minutes=2), [("63100", "1")], sequence=2))
    stepped_back = publishing.candle_updates(
        btc_usd, traded_batch(btc_usd, BASE + timedelta(minutes=1), [("62000", "1")], sequence=3))  # 23:51

    sent = {interval: candle for interval, candle, closed in stepped_back if not closed}
    assert sent["5m"] == candle_at(btc_usd, "5m", BASE_MS)
    assert (sent["5m"].close, sent["5m"].low, sent["5m"].trades) == (D("63100"), D("62000"), 3)
    assert "1m" not in sent  # the 23:51 minute was left behind


@pytest.mark.django_db
def test_after_a_restart_the_first_trades_of_an_interval_announce_the_previous_candle_closed(btc_usd):
    """The publisher's memory is empty (its process restarted, or it missed a batch): the interval before
    the batch's ended unseen, and its subscribers had it open."""
    publishing.candle_updates(btc_usd, traded_batch(btc_usd, BASE, [("63000", "1")], sequence=1))  # 23:50
    publishing.candle_state.reset()
    next_minute = publishing.candle_updates(
        btc_usd, traded_batch(btc_usd, BASE + timedelta(minutes=1), [("63100", "1")], sequence=2))  # 23:51
    publishing.candle_state.reset()
    same_minute = publishing.candle_updates(
        btc_usd, traded_batch(btc_usd, BASE + timedelta(minutes=1, seconds=5), [("63200", "1")], sequence=3))

    assert [(interval, candle.time, closed) for interval, candle, closed in next_minute[:3]] == [
        ("1m", BASE_MS, True), ("1m", BASE_MS + 60_000, False), ("5m", BASE_MS, False)]
    assert next_minute[0][1] == candle_at(btc_usd, "1m", BASE_MS)
    # Not the interval's first trades: its first batch announced the previous candle closed already.
    assert [closed for _, _, closed in same_minute] == [False] * len(INTERVALS)


@pytest.mark.django_db
def test_the_publisher_adds_each_batch_to_the_current_candles_and_reads_them_again_after_a_batch_it_missed(btc_usd):
    first = traded_batch(btc_usd, BASE, [("63000", "1")], sequence=1)
    updates = publishing.candle_updates(btc_usd, first)
    second = traded_batch(btc_usd, BASE + timedelta(seconds=10), [("63100", "2")], sequence=2)
    merged = publishing.candle_updates(btc_usd, second)
    traded_batch(btc_usd, BASE + timedelta(seconds=20), [("62900", "3")], sequence=3)  # published elsewhere
    fourth = traded_batch(btc_usd, BASE + timedelta(seconds=30), [("63050", "4")], sequence=4)
    read_again = publishing.candle_updates(btc_usd, fourth)
    next_minute = publishing.candle_updates(
        btc_usd, traded_batch(btc_usd, BASE + timedelta(minutes=1), [("63200", "5")], sequence=5))

    assert [(interval, closed) for interval, _, closed in updates] == [(interval, False) for interval in INTERVALS]
    one_minute = {interval: candle for interval, candle, _ in merged}["1m"]
    assert (one_minute.open, one_minute.close, one_minute.high, one_minute.volume, one_minute.trades) == (
        D("63000"), D("63100"), D("63100"), D("3"), 2)
    after_gap = {interval: candle for interval, candle, _ in read_again}["1m"]
    assert (after_gap.low, after_gap.close, after_gap.volume, after_gap.trades) == (D("62900"), D("63050"), D("10"), 4)
    # 23:51: the 23:50 minute closes; every longer interval goes on.
    assert [(interval, candle.time, closed) for interval, candle, closed in next_minute[:3]] == [
        ("1m", BASE_MS, True), ("1m", BASE_MS + 60_000, False), ("5m", BASE_MS, False)]
    assert next_minute[0][1] == after_gap


@sockets
def test_the_candles_channel_sends_the_current_candle_its_updates_and_each_closed_one(markets, maker, taker, clock):
    clock(BASE + timedelta(seconds=5))

    async def body():
        await place(maker, side="sell", type="limit", price=D("63000"), size=D("1"))
        await place(taker, side="buy", type="market", size=D("0.2"), time_in_force="IOC")
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "candles", "pair": "btc-usd", "interval": "1m"},
                                               {"name": "candles", "pair": "BTC-USD", "interval": "1h"}])
        ack, initial, _, initial_hour = [await receive(ws) for _ in range(4)]
        await place(taker, side="buy", type="market", size=D("0.3"), time_in_force="IOC")
        updated = [await receive(ws, "candle"), await receive(ws, "candle")]
        clock(BASE + timedelta(seconds=65))
        await place(taker, side="buy", type="market", size=D("0.1"), time_in_force="IOC")
        later = [await receive(ws, "candle") for _ in range(3)]
        await op(ws, op="unsubscribe", channels=[{"name": "candles", "pair": "BTC-USD", "interval": "1m"}])
        gone = await receive(ws, "unsubscribed")
        await ws.disconnect()
        return ack, initial, initial_hour, updated, later, gone

    ack, initial, initial_hour, updated, later, gone = run(body)

    assert ack == {"type": "subscribed", "channel": "candles", "pair": "BTC-USD", "interval": "1m"}
    assert initial == {"type": "candle", "channel": "candles", "pair": "BTC-USD", "interval": "1m", "closed": False,
                       "candle": [BASE_MS, "63000.00", "63000.00", "63000.00", "63000.00", "0.20000000",
                                  "12600.0000000000", 1]}
    assert initial_hour["interval"] == "1h" and initial_hour["candle"][0] == BASE_MS - 50 * 60_000
    by_interval = {message["interval"]: message for message in updated}
    assert by_interval["1m"]["candle"][5:] == ["0.50000000", "31500.0000000000", 2]
    assert by_interval["1m"]["closed"] is False
    assert by_interval["1h"]["candle"][5:] == ["0.50000000", "31500.0000000000", 2]
    closed, opened, hour = later
    assert closed == {**by_interval["1m"], "closed": True}  # the 23:50 minute, as it ended
    assert opened["candle"][0] == BASE_MS + 60_000 and opened["candle"][7] == 1 and opened["closed"] is False
    assert hour["interval"] == "1h" and hour["candle"][5:] == ["0.60000000", "37800.0000000000", 3]
    assert gone == {"type": "unsubscribed", "channel": "candles", "pair": "BTC-USD", "interval": "1m"}


@sockets
def test_a_subscriber_to_a_quiet_pair_gets_its_last_candle_closed_then_the_next_one(markets, maker, taker, clock):
    clock(BASE)

    async def body():
        await place(maker, side="sell", type="limit", price=D("63000"), size=D("1"))
        await place(taker, side="buy", type="market", size=D("0.2"), time_in_force="IOC")
        clock(BASE + timedelta(minutes=3))
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "candles", "pair": "BTC-USD", "interval": "1m"},
                                               {"name": "candles", "pair": "ETH-USD", "interval": "1m"}])
        last = await receive(ws, "candle")  # ETH-USD has none
        await place(taker, side="buy", type="market", size=D("0.1"), time_in_force="IOC")
        first_of_next = await receive(ws, "candle")
        await op(ws, op="ping")
        after = await receive(ws)
        await ws.disconnect()
        return last, first_of_next, after

    last, first_of_next, after = run(body)

    assert last["candle"][0] == BASE_MS and last["closed"] is True
    # The publisher also announces the 23:50 minute closed: this subscriber had it closed already.
    assert first_of_next["candle"][0] == BASE_MS + 3 * 60_000 and first_of_next["closed"] is False
    assert after == {"type": "pong"}


@sockets
def test_a_subscribe_again_sends_no_candle_the_connection_was_sent(markets, maker, taker, clock):
    clock(BASE + timedelta(seconds=5))
    channel = {"name": "candles", "pair": "BTC-USD", "interval": "1m"}

    async def body():
        await place(maker, side="sell", type="limit", price=D("63000"), size=D("1"))
        await place(taker, side="buy", type="market", size=D("0.2"), time_in_force="IOC")
        ws = await connect()
        await op(ws, op="subscribe", channels=[channel])
        first = [await receive(ws) for _ in range(2)]
        await op(ws, op="subscribe", channels=[channel])
        await op(ws, op="ping")
        again = [await receive(ws) for _ in range(2)]
        await place(taker, side="buy", type="market", size=D("0.3"), time_in_force="IOC")
        update = await receive(ws)
        await op(ws, op="unsubscribe", channels=[channel])
        await op(ws, op="subscribe", channels=[channel])
        afresh = [await receive(ws) for _ in range(3)]
        hub = hub_for(get_channel_layer())
        hub.interrupt("a test")
        await receive(ws, "heartbeat")
        hub.resume()  # after a channel-layer outage the latest candle is sent afresh
        resumed = await receive(ws, "candle")
        await ws.disconnect()
        return first, again, update, afresh, resumed

    first, again, update, afresh, resumed = run(body)

    assert [message["type"] for message in first] == ["subscribed", "candle"]
    assert again == [{"type": "subscribed", "channel": "candles", "pair": "BTC-USD", "interval": "1m"}, {"type": "pong"}]
    assert update["type"] == "candle" and update["candle"][7] == 2
    assert [message["type"] for message in afresh] == ["unsubscribed", "subscribed", "candle"]
    assert afresh[2]["candle"] == update["candle"]
    assert resumed["candle"] == update["candle"]


@sockets
def test_a_batch_makes_one_message_per_interval_whatever_the_number_of_subscribers(markets, maker, taker,
                                                                                  monkeypatch):
    made = []
    candle_message = streams.candle_message
    monkeypatch.setattr(streams, "candle_message", lambda *args, **kwargs: made.append(args[1]) or candle_message(
        *args, **kwargs))

    async def body():
        sockets = [await connect() for _ in range(3)]
        for ws in sockets:
            await op(ws, op="subscribe", channels=[{"name": "candles", "pair": "BTC-USD", "interval": "5m"}])
            await receive(ws, "subscribed")
        made.clear()  # what the subscribes sent (nothing: no trade yet)
        await place(maker, side="sell", type="limit", price=D("63000"), size=D("1"))
        await place(taker, side="buy", type="market", size=D("0.2"), time_in_force="IOC")
        received = [await receive(ws, "candle") for ws in sockets]
        for ws in sockets:
            await ws.disconnect()
        return received

    received = run(body)

    assert sorted(made) == sorted(INTERVALS)
    assert all(message == received[0] for message in received)
