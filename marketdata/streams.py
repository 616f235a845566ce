"""The WebSocket messages of SPEC section 7, built in one place for the publisher and the consumer.

Channels groups: ``book.<PAIR>``, ``trades.<PAIR>``, ``ticker.<PAIR>``, ``candles.<PAIR>.<interval>`` for
the public channels and ``account.<id>`` for one account's private events.
"""

import json

from exchange.checksum import book_checksum
from exchange.fields import to_milliseconds
from exchange.money import format_amount
from marketdata import services
from marketdata.api.serializers import candle_row, ticker_data


def book_group(pair: str) -> str:
    return f"book.{pair}"


def trades_group(pair: str) -> str:
    return f"trades.{pair}"


def ticker_group(pair: str) -> str:
    return f"ticker.{pair}"


def candles_group(pair: str, interval: str) -> str:
    return f"candles.{pair}.{interval}"


def account_group(account_id: int) -> str:
    return f"account.{account_id}"


def format_levels(market, levels) -> list[list[str]]:
    """[price, size] on the market's grids; a removed level's size is "0" exactly, as SPEC section 7
    writes it, so a client comparing strings sees the removal."""
    return [[format_amount(price, market.tick_size), format_amount(size, market.lot_size) if size else "0"]
            for price, size in levels]


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
            "timestamp": book.timestamp, "bids": bids, "asks": asks, "checksum": book_checksum(bids, asks)}


def trade_texts(market, trades) -> list[str]:
    """Each trade's message, as the text every subscriber receives:
    ``{"type": "trade", "channel": "trades", "pair", "trade_id", "price", "size", "taker_side", "time"}``.

    Assembled around the parts that differ from trade to trade (a batch's trades share their pair and
    their time): a json.dumps of a dict per trade would be most of the publisher's work. The parts are digits,
    a side and the JSON-encoded pair, so the text is what json.dumps would give."""
    head = '{"type": "trade", "channel": "trades", "pair": ' + json.dumps(market.pair) + ', "trade_id": '
    tick, lot, times, texts = market.tick_size, market.lot_size, {}, []
    for trade in trades:
        if trade.executed_at not in times:
            times[trade.executed_at] = to_milliseconds(trade.executed_at)
        texts.append(f'{head}{trade.pk}, "price": "{format_amount(trade.price, tick)}", '
                     f'"size": "{format_amount(trade.size, lot)}", "taker_side": "{trade.taker_side}", '
                     f'"time": {times[trade.executed_at]}}}')
    return texts


def ticker_message(market) -> dict:
    return {"type": "ticker", "channel": "ticker", **ticker_data(services.ticker(market))}


def candle_message(market, interval: str, candle, *, closed: bool) -> dict:
    """The group message of one candle: routing fields, what orders it among the interval's messages
    (``key``: its time, its trade count, whether closed), and ``text``, as every subscriber receives it:
    ``{"type": "candle", "channel": "candles", "pair", "interval", "closed", "candle": [row]}``."""
    group = candles_group(market.pair, interval)
    sent = {"type": "candle", "channel": "candles", "pair": market.pair, "interval": interval, "closed": closed,
            "candle": candle_row(market, candle)}
    return {"type": "market.candle", "group": group, "pair": market.pair, "interval": interval,
            "key": [candle.time, candle.trades, closed], "text": json.dumps(sent)}
