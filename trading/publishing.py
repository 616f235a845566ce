"""What the matcher tells the world after a batch commits: book deltas, trades, order updates.

Messages go to Channels groups (Redis in production, in-memory in the embedded default), which the
WebSocket consumers relay: ``book.<PAIR>``, ``trades.<PAIR>``, and ``account.<id>`` for an
account's own orders and fills. Nothing here runs before the commit (``transaction.on_commit``).
"""

import logging
from collections import defaultdict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from exchange.fields import to_milliseconds
from exchange.money import format_amount
from trading import dispatch

logger = logging.getLogger(__name__)


def book_group(pair: str) -> str:
    return f"book.{pair}"


def trades_group(pair: str) -> str:
    return f"trades.{pair}"


def account_group(account_id: int) -> str:
    return f"account.{account_id}"


def book_delta_message(result) -> dict:
    market, delta = result.market, result.delta

    def levels(rows):
        return [[format_amount(p, market.tick_size), format_amount(s, market.lot_size)] for p, s in rows]

    return {"type": "book.delta", "pair": market.pair, "sequence": delta.sequence,
            "bids": levels(delta.bids), "asks": levels(delta.asks)}


def trade_payload(trade, market) -> dict:
    return {"pair": market.pair, "trade_id": trade.pk, "price": format_amount(trade.price, market.tick_size),
            "size": format_amount(trade.size, market.lot_size), "taker_side": trade.taker_side,
            "time": to_milliseconds(trade.executed_at)}


def publish_batch(result) -> None:
    """Called on commit of a matcher batch. A failure to publish never undoes the batch."""
    dispatch.announce_processed(result.processed_order_ids)
    layer = get_channel_layer()
    if layer is None:
        return
    send = async_to_sync(layer.group_send)
    pair = result.market.pair
    try:
        if result.delta is not None:
            send(book_group(pair), book_delta_message(result))
        if result.trades:
            send(trades_group(pair), {"type": "market.trades",
                                      "trades": [trade_payload(t, result.market) for t in result.trades]})
        per_account = defaultdict(lambda: {"orders": [], "fills": []})
        for order in result.orders:
            per_account[order.account_id]["orders"].append(order.pk)
        for fill in result.fills:
            per_account[fill.account_id]["fills"].append(fill.pk)
        for account_id, changes in per_account.items():
            send(account_group(account_id), {"type": "account.changes", **changes})
    except Exception:
        # Streams resynchronise from sequences and snapshots; the committed batch stands.
        logger.exception("publishing a %s batch failed", pair)
