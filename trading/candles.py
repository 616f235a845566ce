"""Per-minute candles of each pair's trades, written by the matcher in each batch's transaction.

A batch's trades share one timestamp, so a batch adds to one minute's candle. The candle in the
database is the sum of its batches, added in commit order (the matcher commits its batches in
order): high and low widen, volumes add up, the close is the last batch's, the open stays the first
one's. Nothing is kept in memory, so a restart, a failed write or a clock that steps back or jumps
needs no repair: every batch adds to the minute its trades carry.
"""

from dataclasses import astuple, dataclass, fields
from datetime import datetime
from decimal import Decimal

from trading.backends import store
from trading.models import Candle
from trading.sql import Statement


@dataclass(slots=True)
class BatchCandle:
    """One batch's trades as one minute's candle; the fields are Candle's columns."""

    market_id: int
    minute: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int


CANDLE_COLUMNS = [field.name for field in fields(BatchCandle)]


def batch_candle(market_id: int, executed_at: datetime, trades: list[tuple[Decimal, Decimal, Decimal]]) -> BatchCandle:
    """The batch's (price, size, quote) trades, in order, as one minute's candle."""
    prices = [price for price, _, _ in trades]
    volume, quote_volume = sum(size for _, size, _ in trades), sum(quote for _, _, quote in trades)
    return BatchCandle(market_id, executed_at.replace(second=0, microsecond=0), prices[0], max(prices), min(prices),
                       prices[-1], volume, quote_volume, len(trades))


def candle_statement(candle: BatchCandle) -> Statement:
    """Add the batch to its minute's candle, in SQL: one statement of the batch's writes."""
    return store().adding_candle_statement(Candle, CANDLE_COLUMNS, list(astuple(candle)))
