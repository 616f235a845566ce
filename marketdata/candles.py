"""Candles of every interval (SPEC section 10), built from the per-minute candles the matcher writes in
each batch's transaction (trading.candles).

``GET /v1/candles/{pair}`` aggregates the minutes of a page in the database, in one query. The
``candles`` channel's publisher (marketdata.publishing) adds each batch's trades to the current candle
of each interval instead, in memory, with ``IntervalCandle.merged``.

Intervals are aligned to the Unix epoch in UTC, as Binance's are: a day starts at 00:00 UTC, 4 h
candles at 00:00, 04:00, ... An interval without trades has no candle (no row, no message): a client
that wants one per interval fills a gap with the previous close.
"""

from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal

from django.db.models import Aggregate, BigIntegerField, Func, Max, Min, Sum

from exchange.fields import EPOCH, LAST_MILLISECOND, to_milliseconds
from trading.candles import BatchCandle
from trading.models import AmountField, Candle, Market
from trading.sql import ExactSum

INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 4 * 3600, "1d": 24 * 3600}  # seconds
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


def interval_ms(interval: str) -> int:
    return INTERVALS[interval] * 1000


def interval_start(time_ms: int, interval: str) -> int:
    """The start (ms) of the interval that holds ``time_ms``."""
    return time_ms - time_ms % interval_ms(interval)


@dataclass(frozen=True, slots=True)
class IntervalCandle:
    time: int  # ms: the start of its interval
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int

    @classmethod
    def of_batch(cls, batch: BatchCandle, interval: str) -> "IntervalCandle":
        """One batch's minute as its part of the interval's candle."""
        return cls(interval_start(to_milliseconds(batch.minute), interval), batch.open, batch.high, batch.low,
                   batch.close, batch.volume, batch.quote_volume, batch.trades)

    def merged(self, later: "IntervalCandle") -> "IntervalCandle":
        """This candle with a later part of its interval added: the open stays, the close is the later's."""
        return replace(self, high=max(self.high, later.high), low=min(self.low, later.low), close=later.close,
                       volume=self.volume + later.volume, quote_volume=self.quote_volume + later.quote_volume,
                       trades=self.trades + later.trades)

    def is_closed(self, interval: str, now_ms: int) -> bool:
        return self.time + interval_ms(interval) <= now_ms


class IntervalStart(Func):
    """The start of the interval of ``seconds`` that holds a time, in seconds since the epoch."""

    output_field = BigIntegerField()

    def __init__(self, expression, seconds: int):
        super().__init__(expression, seconds=int(seconds))

    def as_sqlite(self, compiler, connection, **extra_context):
        # strftime's format goes as a parameter: a literal "%s" would be taken for a placeholder.
        template = "(CAST(strftime(%%s, %(expressions)s) AS INTEGER) / %(seconds)s * %(seconds)s)"
        sql, params = self.as_sql(compiler, connection, **extra_context, template=template)
        return sql, ("%s", *params)

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, **extra_context,
                           template="(EXTRACT(EPOCH FROM %(expressions)s)::bigint / %(seconds)s * %(seconds)s)")


class ValueAtTime(Aggregate):
    """An amount at the earliest (``MIN``) or latest (``MAX``) time of the group, in the same pass as
    the other aggregates: the (time, amount) pairs are compared whole and the amount taken from the
    least or greatest. PostgreSQL compares numeric arrays; on SQLite an amount is fixed-width text
    (exchange.db_backends), so the pair is the time's digits followed by it."""

    output_field = AmountField()

    def __init__(self, amount: str, time: str, *, latest: bool):
        self.function = "MAX" if latest else "MIN"
        super().__init__(amount, time)

    def compiled(self, compiler):
        amount, time = self.get_source_expressions()[:2]  # then the aggregate's filter (none here)
        (amount, amount_params), (time, time_params) = compiler.compile(amount), compiler.compile(time)
        return amount, amount_params, time, time_params

    def as_sqlite(self, compiler, connection, **extra_context):
        amount, amount_params, time, time_params = self.compiled(compiler)
        return (f"SUBSTR({self.function}(strftime(%s, {time}) || {amount}), 15)",
                ["%Y%m%d%H%M%S", *time_params, *amount_params])

    def as_postgresql(self, compiler, connection, **extra_context):
        amount, amount_params, time, time_params = self.compiled(compiler)
        return f"({self.function}(ARRAY[EXTRACT(EPOCH FROM {time}), {amount}]))[2]", [*time_params, *amount_params]


def page_window(interval: str, *, start: int | None, end: int | None, limit: int, now_ms: int) -> tuple[int, int]:
    """The times (ms, start inclusive, end exclusive) of the candles of a page: ``limit`` intervals from
    ``start`` when it is given, else up to ``end`` (or the current interval), and never past ``end``.
    A candle is in it when its own time (its interval's start) is."""
    step = interval_ms(interval)

    def first_start_from(time_ms: int) -> int:
        return -(-time_ms // step) * step

    if start is not None:
        low = first_start_from(start)
        high = low + limit * step if end is None else min(low + limit * step, first_start_from(end))
    else:
        high = first_start_from(end) if end is not None else interval_start(now_ms, interval) + step
        low = high - limit * step
    low = max(0, min(low, LAST_MILLISECOND))  # the times a datetime holds
    return low, max(low, min(high, LAST_MILLISECOND))


def as_datetime(time_ms: int):
    return EPOCH + timedelta(milliseconds=time_ms)


def aggregated(market: Market, interval: str, low: int, high: int) -> list[IntervalCandle]:
    """The candles of ``interval`` whose times are in [low, high) ms, oldest first: one query over the
    minutes they hold."""
    seconds = INTERVALS[interval]
    rows = (
        Candle.objects.filter(market=market, minute__gte=as_datetime(low), minute__lt=as_datetime(high))
        .annotate(start=IntervalStart("minute", seconds)).values("start")
        .annotate(first=ValueAtTime("open", "minute", latest=False), highest=Max("high"), lowest=Min("low"),
                  last=ValueAtTime("close", "minute", latest=True), base=ExactSum("volume"),
                  quote=ExactSum("quote_volume"), count=Sum("trades"))
        .order_by("start")
    )
    return [IntervalCandle(row["start"] * 1000, row["first"], row["highest"], row["lowest"], row["last"], row["base"],
                           row["quote"], row["count"]) for row in rows]


def candles(market: Market, interval: str, *, start: int | None = None, end: int | None = None, limit: int,
            now_ms: int) -> list[IntervalCandle]:
    """A page of candles (see page_window), oldest first."""
    return aggregated(market, interval, *page_window(interval, start=start, end=end, limit=limit, now_ms=now_ms))


def candle_at(market: Market, interval: str, time_ms: int) -> IntervalCandle | None:
    """The candle of the interval that holds ``time_ms``, if it has trades."""
    start = interval_start(time_ms, interval)
    found = aggregated(market, interval, start, start + interval_ms(interval))
    return found[0] if found else None


def candle_before(market: Market, interval: str, time_ms: int) -> IntervalCandle | None:
    """The last candle of the interval before the one that holds ``time_ms``, if any has trades."""
    minute = (Candle.objects.filter(market=market, minute__lt=as_datetime(interval_start(time_ms, interval)))
              .order_by("-minute").values_list("minute", flat=True).first())
    return None if minute is None else candle_at(market, interval, to_milliseconds(minute))


def latest_candle(market: Market, interval: str) -> IntervalCandle | None:
    """The pair's most recent candle of ``interval`` (the current one, or the last with trades)."""
    minute = Candle.objects.filter(market=market).order_by("-minute").values_list("minute", flat=True).first()
    return None if minute is None else candle_at(market, interval, to_milliseconds(minute))
