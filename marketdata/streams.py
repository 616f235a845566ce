"""The WebSocket messages of SPEC section 7, built in one place for the publisher and the consumer.

Channels groups: ``book.<PAIR>``, ``trades.<PAIR>``, ``ticker.<PAIR>`` for the public channels and
``account.<id>`` for one account's private events.
"""

import json

from django.utils import timezone

from exchange.fields import to_milliseconds
from exchange.money import format_amount
from marketdata import services
from marketdata.api.serializers import TickerSerializer
from marketdata.checksum import book_checksum


def book_group(pair: str) -> str:
    return f"book.{pair}"


def trades_group(pair: str) -> str:
    return f"trades.{pair}"


def ticker_group(pair: str) -> str:
    return f"ticker.{pair}"


def account_group(account_id: int) -> str:
    return f"account.{account_id}"


def format_levels(market, levels) -> list[list[str]]:
    return [[format_amount(price, market.tick_size), format_amount(size, market.lot_size)] for price, size in levels]


def book_delta(market, delta) -> dict:
    """The group message of a delta: routing fields, and ``text``, the delta as every client
    receives it, encoded once here rather than once per connection."""
    sent = {
        "type": "delta",
        "channel": "orderbook",
        "pair": market.pair,
        "sequence": delta.sequence,
        "bids": format_levels(market, delta.bids),
        "asks": format_levels(market, delta.asks),
        "checksum": book_checksum(format_levels(market, delta.top_bids), format_levels(market, delta.top_asks)),
    }
    return {"type": "book.delta", "group": book_group(market.pair), "pair": market.pair, "sequence": delta.sequence,
            "text": json.dumps(sent)}


def book_snapshot(market) -> dict:
    """The whole committed book and its sequence, read in one snapshot (see services.order_book)."""
    book = services.order_book(market, depth=None)
    bids, asks = format_levels(market, book.bids), format_levels(market, book.asks)
    return {"type": "snapshot", "channel": "orderbook", "pair": market.pair, "sequence": book.sequence,
            "bids": bids, "asks": asks, "checksum": book_checksum(bids, asks)}


def trade_message(market, trade) -> dict:
    return {"type": "trade", "channel": "trades", "pair": market.pair, "trade_id": trade.pk,
            "price": format_amount(trade.price, market.tick_size), "size": format_amount(trade.size, market.lot_size),
            "taker_side": trade.taker_side, "time": to_milliseconds(trade.executed_at)}


def ticker_message(market) -> dict:
    ticker = services.ticker(market)
    data = {"market": market, "time": to_milliseconds(timezone.now()),
            **{name: getattr(ticker, name) for name in TickerSerializer().fields if hasattr(ticker, name)}}
    return {"type": "ticker", "channel": "ticker", **TickerSerializer(data, context={"market": market}).data}
