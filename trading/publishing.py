"""What the matcher tells the world after a batch commits: book deltas, trades, ticker, account events.

Messages go to Channels groups (Redis in production, in-memory in the embedded default), which the
WebSocket consumers relay. A delta is recorded in the replay buffer before it is sent, so a client
resuming from any sequence finds it either in the buffer or, later, in its own channel.
Nothing here runs before the commit (``transaction.on_commit``).
"""

import logging
from collections import defaultdict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from marketdata import replay, streams
from trading import dispatch

logger = logging.getLogger(__name__)

# The best bid and ask last published per pair: the ticker goes out when a batch trades or moves them.
_top_of_book: dict[str, tuple] = {}


def group_send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, message)


def publish_batch(result) -> None:
    """Called on commit of a matcher batch. A failure to publish never undoes the batch: clients see
    the sequence gap and resynchronise."""
    dispatch.announce_processed(result.processed_order_ids)
    market = result.market
    try:
        if result.delta is not None:
            message = streams.book_delta(market, result.delta)
            replay.record_delta(market.pair, message)
            group_send(streams.book_group(market.pair), message)
        if result.trades:
            group_send(streams.trades_group(market.pair),
                       {"type": "market.trades", "trades": [streams.trade_message(market, t) for t in result.trades]})
        top = None if result.delta is None else (result.delta.top_bids[:1], result.delta.top_asks[:1])
        if result.trades or (top is not None and top != _top_of_book.get(market.pair)):
            _top_of_book[market.pair] = top or _top_of_book.get(market.pair)
            group_send(streams.ticker_group(market.pair), {**streams.ticker_message(market), "type": "market.ticker"})
        per_account = defaultdict(lambda: {"orders": [], "fills": []})
        for order in result.orders:
            per_account[order.account_id]["orders"].append(order.pk)
        for fill in result.fills:
            per_account[fill.account_id]["fills"].append(fill.pk)
        for account_id, changes in per_account.items():
            publish_account_changes(account_id, **changes)
    except Exception:
        logger.exception("publishing a %s batch failed", market.pair)


def publish_account_changes(account_id: int, orders=(), fills=()) -> None:
    """Tell an account's connections which of its orders and fills changed (they read them back)."""
    group_send(streams.account_group(account_id), {"type": "account.changes", "orders": list(orders),
                                                   "fills": list(fills)})
