"""What the matcher tells the world after a batch commits: book deltas, trades, ticker, account events.

Messages go to Channels groups (Redis in production, in-memory in the embedded default), which the
WebSocket consumers relay. A delta is recorded in the replay buffer before it is sent, so a client
resuming from any sequence finds it either in the buffer or, later, in its own channel.
Nothing here runs before the commit (``transaction.on_commit``).

In production a committed batch goes out on one publisher thread, in commit order, while the matcher
settles the next batch: formatting and sending were 12-16 % of a batch (docs/performance.md). What
reads the database (the ticker) is done on the committing thread's own connection, after the batch
is handed over.
"""

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor

import redis.exceptions
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from exchange.redis import get_redis
from marketdata import replay, streams
from marketdata.hub import serving_loop
from trading import dispatch

logger = logging.getLogger(__name__)

# The best bid and ask last published per pair: the ticker changes when a batch trades or moves them.
_top_of_book: dict[str, tuple] = {}
# A changed ticker is owed to the pair's subscribers; it goes out at most every TICKER_INTERVAL_SECONDS,
# and when the queue empties.
TICKER_INTERVAL_SECONDS = 0.25
_ticker_owed: set[str] = set()
_ticker_sent: dict[str, float] = {}
_loop: asyncio.AbstractEventLoop | None = None
_start_lock = threading.Lock()  # the event loop's and the publisher's threads are started once
# At most this many committed batches wait for the publisher thread; then the matcher waits for it.
PUBLISH_BACKLOG = 8
_publisher: ThreadPoolExecutor | None = None
_backlog = threading.BoundedSemaphore(PUBLISH_BACKLOG)
# The last event number of each account, in the embedded default's one process (Redis holds them otherwise).
_account_events: dict[int, int] = defaultdict(int)
_account_events_lock = threading.Lock()


def publishing_loop() -> asyncio.AbstractEventLoop:
    """One event loop for the process's sends to the Redis channel layer, kept running on its own
    thread: async_to_sync would make a new loop, and new Redis connections, for every call."""
    global _loop
    with _start_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="channel-layer-publisher", daemon=True).start()
    return _loop


async def send_in_order(layer, messages: list[tuple[str, dict]]) -> None:
    # Account events are numbered as they are sent, on the one loop this process sends from, so that
    # the numbers follow the order of the sends (a blocking round trip is fine there: that loop only
    # publishes); one round trip numbers all of a batch's.
    numbers = iter(next_account_events([message["account"] for _, message in messages
                                        if message["type"] == "account.changes"]))
    for group, message in messages:
        if message["type"] == "account.changes":
            message = {**message, "event": next(numbers)}
        try:
            await layer.group_send(group, message)
        except redis.exceptions.ConnectionError:
            # After a Redis restart the first command on each pooled connection fails (the server
            # closed it): sent again on a fresh one, rather than a trade or event lost for good. Had
            # the first send's reply been lost instead, clients get it twice and tell by trade id,
            # delta sequence or event number.
            await layer.group_send(group, message)


def next_account_events(account_ids: list[int]) -> list[int]:
    """The numbers of the accounts' next events: +1 per account.changes message, counted across every
    process that publishes (web processes accepting orders, each pair's matcher). Consumers see the
    channel layer's silent drops as gaps (marketdata.account_events)."""
    if not account_ids:
        return []
    if settings.REDIS_URL:
        pipeline = get_redis().pipeline(transaction=False)
        for account_id in account_ids:
            pipeline.incr(f"account-events:{account_id}")
        return pipeline.execute()
    with _account_events_lock:
        numbers = []
        for account_id in account_ids:
            _account_events[account_id] += 1
            numbers.append(_account_events[account_id])
        return numbers


def group_send_all(messages: list[tuple[str, dict]]) -> None:
    """Send (group, message) pairs in order, with one hand-over to async code for all of them."""
    layer = get_channel_layer()
    if layer is None or not messages:
        return
    if settings.REDIS_URL:
        asyncio.run_coroutine_threadsafe(send_in_order(layer, messages), publishing_loop()).result(timeout=30)
    elif (loop := serving_loop()) is not None:
        # The in-memory layer is not thread-safe: its queues belong to the server's loop, where the
        # connections wait on them. Sent there, from whichever thread (a request's, a retry timer's).
        asyncio.run_coroutine_threadsafe(send_in_order(layer, messages), loop).result(timeout=30)
    else:
        async_to_sync(send_in_order)(layer, messages)  # no connection here to receive it


def publisher() -> ThreadPoolExecutor:
    """One thread, so that what is handed over goes out in the order it was handed over."""
    global _publisher
    with _start_lock:
        if _publisher is None:
            _publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-publisher")
    return _publisher


def publish_in_order(send, *args) -> None:
    """``send(*args)`` on the publisher thread (production), or now (the embedded default, whose
    in-memory layer is reached from the caller's thread)."""
    if not settings.REDIS_URL:
        send(*args)
        return
    _backlog.acquire()
    publisher().submit(send, *args).add_done_callback(sent)


def sent(future: Future) -> None:
    _backlog.release()
    if future.exception() is not None:
        logger.error("publishing failed", exc_info=future.exception())


def wait_published() -> None:
    """Return once everything handed to publish_in_order so far has gone out."""
    if _publisher is not None:
        _publisher.submit(lambda: None).result()


def publish_batch(result) -> None:
    """Called on commit of a matcher batch. A failure to publish never undoes the batch: clients see
    the sequence gap and resynchronise. The ticker, a read of the day's candles, is made after the
    batch is handed over, so that it never holds up the batch's delta."""
    market = result.market
    moved = result.delta is not None and top_of_book_moved(market, result.delta)  # remembered also when it traded
    if result.trades or moved:
        _ticker_owed.add(market.pair)
    publish_in_order(send_batch, result)
    if time.monotonic() - _ticker_sent.get(market.pair, -TICKER_INTERVAL_SECONDS) >= TICKER_INTERVAL_SECONDS:
        publish_owed_ticker(market)


def top_of_book_moved(market, delta) -> bool:
    top = (delta.top_bids[:1], delta.top_asks[:1])
    moved = top != _top_of_book.get(market.pair)
    _top_of_book[market.pair] = top
    return moved


def send_batch(result) -> None:
    """The delta first and on its own (subscribers' books wait for nothing else), then the orders
    processed to their waiting requests, then the trades and each account's changes."""
    market = result.market
    if result.delta is not None:
        try:
            message = streams.book_delta(market, result.delta)
            replay.record_delta(market.pair, message)
            group_send_all([(streams.book_group(market.pair), message)])
        except Exception:
            logger.exception("publishing a %s delta failed", market.pair)
    try:
        dispatch.announce_processed(result.processed_order_ids)
        messages = []
        if result.trades:
            group = streams.trades_group(market.pair)
            messages.append((group, {"type": "market.trades", "group": group,
                                     "texts": streams.trade_texts(market, result.trades)}))
        per_account = defaultdict(lambda: {"orders": [], "fills": []})
        for account_id, order_id in result.orders:
            per_account[account_id]["orders"].append(order_id)
        for account_id, fill_id in result.fills:
            per_account[account_id]["fills"].append(fill_id)
        messages += [account_changes(account_id, **changes) for account_id, changes in per_account.items()]
        group_send_all(messages)
    except Exception:
        logger.exception("publishing a %s batch failed", market.pair)


def ticker_messages(market) -> list[tuple[str, dict]]:
    """The pair's ticker if a batch changed it since the last one sent (at most one per interval:
    it aggregates the day's trades, which took milliseconds per batch when sent after each)."""
    if market.pair not in _ticker_owed:
        return []
    _ticker_owed.discard(market.pair)
    _ticker_sent[market.pair] = time.monotonic()
    group = streams.ticker_group(market.pair)
    return [(group, {"type": "market.ticker", "group": group, "text": json.dumps(streams.ticker_message(market))})]


def publish_owed_ticker(market) -> None:
    """After a batch when the interval has passed, and when the matcher's queue is empty, so the last
    batch's ticker never waits for another batch."""
    try:
        ticker = ticker_messages(market)
        if ticker:
            publish_in_order(group_send_all, ticker)
    except Exception:
        logger.exception("publishing the %s ticker failed", market.pair)


def account_changes(account_id: int, orders=(), fills=()) -> tuple[str, dict]:
    return streams.account_group(account_id), {"type": "account.changes", "account": account_id,
                                               "orders": list(orders), "fills": list(fills)}


def publish_account_changes(account_id: int, orders=(), fills=()) -> None:
    """Tell an account's connections which of its orders and fills changed (they read them back)."""
    group_send_all([account_changes(account_id, orders, fills)])
