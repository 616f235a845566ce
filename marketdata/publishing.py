"""What the WebSocket processes are told after a commit: book deltas, trades, candles, ticker, account
events.

Trading announces (``trading.signals``); this module, connected in ``MarketdataConfig.ready``, turns
the announcements into stream messages and hands them to the bus (``trading.backends``), which sends
them to the Channels groups that the consumers relay. A committed batch's Redis work is one round trip
(``send_batch``), and it includes the matcher's answer to the requests waiting for the batch's orders.
A delta is recorded in the replay buffer before it is sent, so a client resuming from any sequence
finds it either in the buffer or, later, in its own channel. What reads the database (the ticker) is
done on the committing thread's own connection, after the batch is handed over.

Candles are published once per batch that trades, for every subscriber at once: this process keeps
each interval's current candle and adds the batch's trades to it (marketdata.candles), in commit order;
it reads one from the database only when it has not followed every batch of the pair (its first, or
after a batch committed elsewhere or a publish that failed).
"""

import json
import logging
import time
from collections import defaultdict
from datetime import datetime

from django.db import connection

from exchange.redis import Reply, RoundTrip
from marketdata import replay, streams
from marketdata.candles import INTERVALS, IntervalCandle, candle_at, candle_before
from trading.backends import bus, event_numbers, matchers
from trading.candles import batch_candle
from trading.rendering import render_fills, render_orders

logger = logging.getLogger(__name__)

# A changed ticker is owed to the pair's subscribers; it goes out at most every TICKER_INTERVAL_SECONDS
# (each is a database read, too much for every batch), and when the queue empties.
TICKER_INTERVAL_SECONDS = 0.25


class TickerSchedule:
    """Per pair: the best bid and ask last published, whether a ticker is owed, when one was sent."""

    def __init__(self):
        self.top_of_book: dict[str, tuple] = {}
        self.owed: set[str] = set()
        self.sent: dict[str, float] = {}

    def reset(self) -> None:
        self.top_of_book.clear()
        self.owed.clear()
        self.sent.clear()


tickers = TickerSchedule()


class CandleState:
    """Per pair: each interval's latest candle as published, the latest minute a batch was stamped with,
    and the book sequence of the last batch seen (a batch that trades always moves the book), by which a
    batch not seen shows."""

    def __init__(self):
        self.latest: dict[str, dict[str, IntervalCandle]] = {}
        self.minutes: dict[str, datetime] = {}
        self.sequences: dict[str, int] = {}

    def reset(self) -> None:
        self.latest.clear()
        self.minutes.clear()
        self.sequences.clear()

    def forget(self, pair: str) -> None:
        self.latest.pop(pair, None)
        self.minutes.pop(pair, None)
        self.sequences.pop(pair, None)


candle_state = CandleState()


def publish_batch(sender, result, **kwargs) -> None:
    """On commit of a matcher batch. A failure to publish never undoes the batch: clients see the
    sequence gap and resynchronise. The ticker is made after the batch is handed over, so that it
    never holds up the batch's delta."""
    market = result.market
    moved = result.delta is not None and top_of_book_moved(market, result.delta)  # remembered also when it traded
    if result.trades or moved:
        tickers.owed.add(market.pair)
    bus().publish_in_order(send_batch, result, changed_candles(market, result))
    if time.monotonic() - tickers.sent.get(market.pair, -TICKER_INTERVAL_SECONDS) >= TICKER_INTERVAL_SECONDS:
        publish_owed_ticker(sender, market)


def forget_lost_deltas(sender, pair: str, sequence: int, **kwargs) -> None:
    """A book loaded at ``sequence``: a replay buffer that holds a delta past it holds a lost timeline's
    (a restored database gives its sequences out again), which would refuse the new deltas' ids and be
    replayed to resuming clients as if it were theirs. It is emptied: resuming clients get a snapshot."""
    dropped = replay.buffer().forget_if_ahead(pair, sequence)
    if dropped:
        logger.warning("%s: the replay buffer held deltas past the book's sequence %d (a restored database?): "
                       "its %d deltas were dropped", pair, sequence, dropped)


def top_of_book_moved(market, delta) -> bool:
    top = (delta.top_bids[:1], delta.top_asks[:1])
    moved = top != tickers.top_of_book.get(market.pair)
    tickers.top_of_book[market.pair] = top
    return moved


def send_batch(result, candles: list[tuple[str, IntervalCandle, bool]] = ()) -> None:
    """One round trip to Redis (the delta into the replay buffer, which of the batch's accounts have a
    private subscriber, the numbers of their events, each processed order's state for the request waiting
    for it: ``matchers().reply``), then one send: the delta first, the trades, each account's changes and
    the ``candles`` the batch changed. Subscribers' books wait for nothing else: where accounts' changes
    are rendered (a database read), the delta goes out before. A part that fails costs only itself and
    what needs it: the work is committed."""
    market = result.market
    per_account = defaultdict(lambda: {"orders": [], "fills": []})
    for account_id, order_id in result.orders:
        per_account[account_id]["orders"].append(order_id)
    for account_id, fill_id in result.fills:
        per_account[account_id]["fills"].append(fill_id)
    trip, delta, recorded = RoundTrip(), [], None
    if result.delta is not None:
        try:
            delta = [(streams.book_group(market.pair), streams.book_delta(market, result.delta))]
            recorded = replay.record_delta(market.pair, delta[0][1], trip)
        except Exception:
            logger.exception("publishing a %s delta failed", market.pair)
    subscribers = bus().private_subscribers(list(per_account), trip)
    numbers = bus().number_account_events(list(per_account), trip)
    replied = matchers().reply(result.states, trip)
    trip.run()
    succeeded(replied, "answering the requests of a %s batch failed", market)
    if recorded is not None and not succeeded(recorded, "publishing a %s delta failed", market):
        delta = []
    # Where the read failed, the accounts' connections read the rows themselves.
    accounts = subscribers.value if succeeded(subscribers, "reading a %s batch's private subscribers failed",
                                              market) else set()
    if accounts and delta:
        send_logged(market, delta)  # before the accounts' changes are rendered, a database read
        delta = []
    rendered = rendered_changes(per_account, accounts)

    def trades() -> list:
        group = streams.trades_group(market.pair)
        return [(group, {"type": "market.trades", "group": group,
                         "texts": streams.trade_texts(market, result.trades)})] if result.trades else []

    def account_events() -> list:
        events = []
        for (account_id, changes), number in zip(per_account.items(), event_numbers(numbers, len(per_account))):
            group, message = account_changes(account_id, **changes, rendered=rendered.get(account_id))
            events.append((group, message if number is None else {**message, "event": number}))
        return events

    def candle_messages() -> list:
        return [(streams.candles_group(market.pair, interval), streams.candle_message(market, interval, candle,
                                                                                      closed=closed))
                for interval, candle, closed in candles]

    messages = []
    for part, build in (("trades", trades), ("account events", account_events), ("candles", candle_messages)):
        messages += built(build, f"publishing a %s batch's {part} failed", market)
    send_logged(market, delta + messages)


def built(build, failure: str, market) -> list:
    """The messages ``build()`` makes, or none, ``failure`` (of the pair) logged."""
    try:
        return build()
    except Exception:
        logger.exception(failure, market.pair)
        return []


def succeeded(reply: Reply, failure: str, market) -> bool:
    """Whether the commands of ``reply`` succeeded; ``failure`` (of the pair) logged if not."""
    try:
        reply.result()
        return True
    except Exception:
        logger.exception(failure, market.pair)
        return False


def send_logged(market, messages: list[tuple[str, dict]]) -> None:
    try:
        bus().send(messages)
    except Exception:
        logger.exception("publishing a %s batch failed", market.pair)


def changed_candles(market, result) -> list[tuple[str, IntervalCandle, bool]]:
    try:
        return candle_updates(market, result)
    except Exception:
        candle_state.forget(market.pair)  # read afresh at the next batch
        logger.exception("publishing the %s candles failed", market.pair)
        return []


def candle_updates(market, result) -> list[tuple[str, IntervalCandle, bool]]:
    """(interval, candle, closed) for each interval: the candle a batch that traded closed (its trades
    are the first of a later interval), then the one it changed."""
    pair, delta = market.pair, result.delta
    if delta is not None:
        if candle_state.sequences.get(pair, delta.sequence - 1) != delta.sequence - 1:
            candle_state.latest.pop(pair, None)  # batches were committed without this process
        candle_state.sequences[pair] = delta.sequence
    if not result.trades:
        return []
    batch = batch_candle(market.pk, result.trades[0].executed_at,
                         [(trade.price, trade.size, trade.price * trade.size) for trade in result.trades])
    latest, updates = candle_state.latest.setdefault(pair, {}), []
    # Stamped before a batch merged already (the clock stepped back): its interval's open and close are
    # those of its earliest and latest minutes, as GET /v1/candles gives them, not this batch's.
    latest_minute = candle_state.minutes.get(pair, batch.minute)
    stepped_back = batch.minute < latest_minute
    candle_state.minutes[pair] = max(batch.minute, latest_minute)
    for interval in INTERVALS:
        part, current = IntervalCandle.of_batch(batch, interval), latest.get(interval)
        if current is None or (stepped_back and part.time == current.time):  # as committed, this batch included
            fresh = current is None
            current = candle_at(market, interval, part.time) or part
            if fresh and current.trades == part.trades:
                # Read afresh (a restart, a batch missed) at the first trades of an interval: the previous
                # candle, which this process did not see end, is announced closed as it would have been.
                previous = candle_before(market, interval, part.time)
                if previous is not None:
                    updates.append((interval, previous, True))
        elif part.time == current.time:
            current = current.merged(part)
        elif part.time > current.time:
            updates.append((interval, current, True))
            current = part
        else:  # the clock stepped back into an interval the subscribers have left (GET /v1/candles has it)
            continue
        latest[interval] = current
        updates.append((interval, current, False))
    return updates


def ticker_messages(market) -> list[tuple[str, dict]]:
    """The pair's ticker if a batch changed it since the last one sent."""
    if market.pair not in tickers.owed:
        return []
    tickers.owed.discard(market.pair)
    tickers.sent[market.pair] = time.monotonic()
    group = streams.ticker_group(market.pair)
    return [(group, {"type": "market.ticker", "group": group, "text": json.dumps(streams.ticker_message(market))})]


def publish_owed_ticker(sender, market, **kwargs) -> None:
    """After a batch when the interval has passed, and when the matcher's queue is empty, so the last
    batch's ticker never waits for another batch."""
    try:
        ticker = ticker_messages(market)
        if ticker:
            bus().publish_in_order(bus().send, ticker)
    except Exception:
        logger.exception("publishing the %s ticker failed", market.pair)


def rendered_changes(per_account: dict[int, dict], accounts: set[int]) -> dict[int, dict]:
    """The changed orders and fills rendered once, in one read, for the ``accounts`` with a connection on
    their private channels (``bus().private_subscribers``): not read again by each of their connections."""
    try:
        return render_once(per_account, accounts)
    except Exception:
        # Never at the cost of the batch's other messages: the connections read the rows themselves.
        logger.exception("rendering a batch's orders and fills failed")
        if not connection.in_atomic_block:
            connection.close()  # a broken connection is opened again for the next batch
        return {}


def render_once(per_account: dict[int, dict], accounts: set[int]) -> dict[int, dict]:
    if not accounts:
        return {}
    owners = {}
    for account_id in accounts:
        for kind in ("orders", "fills"):
            owners.update(((kind, item), account_id) for item in per_account[account_id][kind])
    rendered = {account_id: {"orders": [], "fills": []} for account_id in accounts}
    for kind, key, rows in (("orders", "order_id", render_orders), ("fills", "fill_id", render_fills)):
        ids = [item for owner_kind, item in owners if owner_kind == kind]
        for row in rows(ids) if ids else ():
            rendered[owners[kind, row[key]]][kind].append(row)
    return rendered


def account_changes(account_id: int, orders=(), fills=(), rendered: dict | None = None) -> tuple[str, dict]:
    """An account event: the ids of its changed orders and fills and, where the publisher rendered them, the
    rendered ones (``rendered_changes``)."""
    message = {"type": "account.changes", "account": account_id, "orders": list(orders), "fills": list(fills)}
    if rendered is not None:
        message["rendered"] = rendered
    return streams.account_group(account_id), message


def publish_account_changes(sender, account_id: int, order_ids=(), **kwargs) -> None:
    """Tell an account's connections which of its orders changed (they read them back), or that its
    balances did."""
    bus().send_if_followed(*account_changes(account_id, order_ids))
