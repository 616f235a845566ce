"""Per-minute candles of each pair's trades, written by the matcher in each batch's transaction.

A batch's trades share one timestamp, so a batch adds to one minute's candle. The candle in the
database is the sum of its batches, added in commit order (the matcher commits its batches in
order): high and low widen, volumes add up, the close is the last batch's, the open stays the first
one's. Nothing is kept in memory, so a restart, a failed write or a clock that steps back or jumps
needs no repair: every batch adds to the minute its trades carry.
"""

from dataclasses import asdict, astuple, dataclass, fields
from datetime import datetime
from decimal import Decimal

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

    def merged_into(self, stored: Candle) -> Candle:
        """``stored`` (the minute's candle so far) with this batch added after it."""
        stored.high, stored.low, stored.close = max(stored.high, self.high), min(stored.low, self.low), self.close
        stored.volume += self.volume
        stored.quote_volume += self.quote_volume
        stored.trades += self.trades
        return stored


def batch_candle(market_id: int, executed_at: datetime, trades: list[tuple[Decimal, Decimal, Decimal]]) -> BatchCandle:
    """The batch's (price, size, quote) trades, in order, as one minute's candle."""
    prices = [price for price, _, _ in trades]
    volume, quote_volume = sum(size for _, size, _ in trades), sum(quote for _, _, quote in trades)
    return BatchCandle(market_id, executed_at.replace(second=0, microsecond=0), prices[0], max(prices), min(prices),
                       prices[-1], volume, quote_volume, len(trades))


def candle_statement(candle: BatchCandle) -> Statement:
    """PostgreSQL: add the batch to its minute's candle in SQL (one statement of the batch's pipeline)."""
    columns = [field.name for field in fields(BatchCandle)]
    return Statement(
        f"INSERT INTO {Candle._meta.db_table} AS c ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        "ON CONFLICT (market_id, minute) DO UPDATE SET high = GREATEST(c.high, EXCLUDED.high), "
        "low = LEAST(c.low, EXCLUDED.low), close = EXCLUDED.close, volume = c.volume + EXCLUDED.volume, "
        "quote_volume = c.quote_volume + EXCLUDED.quote_volume, trades = c.trades + EXCLUDED.trades",
        list(astuple(candle)))


def add_candle(candle: BatchCandle) -> None:
    """Elsewhere (SQLite stores amounts as text: no arithmetic in SQL): read, add, write, in the
    batch's transaction, which holds the database's write lock."""
    stored = Candle.objects.filter(market_id=candle.market_id, minute=candle.minute).first()
    if stored is None:
        Candle.objects.create(**asdict(candle))
    else:
        candle.merged_into(stored).save()
