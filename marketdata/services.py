"""Read models of public market data: order book, tickers, recent trades, assets (markets:
trading.markets; candles: marketdata.candles).

They read what the matcher commits (BookState, BookLevel, Trade, Candle), never a cache of their own.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Max, Min, OuterRef, Subquery
from django.utils import timezone

from exchange.errors import ErrorCode, Forbidden, InvalidParameter
from exchange.fields import to_milliseconds
from trading.backends import store
from trading.models import Asset, BookLevel, BookState, Candle, Market, Trade
from trading.sql import ExactSum, first_id_stamped_since
from wallets.models import AssetWalletSettings

PUBLIC_MAX_DEPTH = 100
VERIFIED_MAX_DEPTH = 1000
DEFAULT_DEPTH = 100
DEFAULT_TRADES_LIMIT = 100
MAX_TRADES_LIMIT = 1000
# A pair's trades are stamped with their batch's time, which a clock stepped back can make run back a
# little: a window's ends are looked for this far outside it, and the times themselves decide.
CLOCK_SLACK = timedelta(minutes=1)
LAST_INSTANT = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class BookSnapshot:
    sequence: int
    timestamp: int  # ms: server time of the snapshot
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]


def book_sequence(market: Market) -> int:
    """The pair's committed book sequence (0 before its first delta)."""
    return BookState.objects.filter(market=market).values_list("sequence", flat=True).first() or 0


def order_book(market: Market, depth: int | None) -> BookSnapshot:
    """The committed book, ``depth`` levels a side (all of them for None), its sequence and the time it
    was read."""
    with store().snapshot():
        timestamp = to_milliseconds(timezone.now())
        sequence = book_sequence(market)
        levels = BookLevel.objects.filter(market=market).values_list("price", "size")
        bids = levels.filter(side=BookLevel.Side.BID).order_by("-price")
        asks = levels.filter(side=BookLevel.Side.ASK).order_by("price")
        if depth is not None:
            bids, asks = bids[:depth], asks[:depth]
        return BookSnapshot(sequence, timestamp, list(bids), list(asks))


def check_depth(depth: int, *, verified: bool) -> int:
    if depth < 1 or depth > VERIFIED_MAX_DEPTH:
        raise InvalidParameter("depth", f"Must be between 1 and {VERIFIED_MAX_DEPTH}.")
    if depth > PUBLIC_MAX_DEPTH and not verified:
        raise Forbidden(ErrorCode.DEPTH_REQUIRES_VERIFICATION,
                        f"depth above {PUBLIC_MAX_DEPTH} needs a signed request from a verified account.",
                        max_depth=PUBLIC_MAX_DEPTH)
    return depth


@dataclass(frozen=True)
class Ticker:
    pair: str
    tick_size: Decimal
    lot_size: Decimal
    quote_precision: int  # places of the quote asset: a market cap's
    circulating_supply: Decimal | None  # of the base asset
    last_price: Decimal | None
    last_size: Decimal | None
    best_bid: Decimal | None
    best_bid_size: Decimal | None
    best_ask: Decimal | None
    best_ask_size: Decimal | None
    open_24h: Decimal | None
    high_24h: Decimal | None
    low_24h: Decimal | None
    volume_24h: Decimal
    quote_volume_24h: Decimal
    time: int  # ms: when it was read

    @classmethod
    def of_row(cls, row: tuple, time: int) -> "Ticker":
        """A row of ``ticker_rows``: a window without trades sums to nothing, its volumes are 0."""
        *fields, volume, quote_volume = row
        return cls(*fields, volume or Decimal(0), quote_volume or Decimal(0), time)

    @property
    def change_24h(self) -> Decimal | None:
        if self.last_price is None or self.open_24h is None:
            return None
        return self.last_price - self.open_24h

    @property
    def change_24h_pct(self) -> Decimal | None:
        if self.change_24h is None:
            return None
        return (self.change_24h * 100 / self.open_24h).quantize(Decimal("0.01"))

    @property
    def market_cap(self) -> Decimal | None:
        """Circulating supply of the base asset valued at the last price, in the quote asset."""
        if self.last_price is None or self.circulating_supply is None:
            return None
        return self.last_price * self.circulating_supply


def column(rows, name: str) -> Subquery:
    """The first row's ``name``, per market (rows filtered on OuterRef("pk"))."""
    return Subquery(rows.values(name)[:1])


def aggregated(rows, aggregate) -> Subquery:
    """``aggregate`` over all the rows, per market (rows filtered on OuterRef("pk"))."""
    return Subquery(rows.order_by().values("market").annotate(value=aggregate).values("value"))


def window_start() -> datetime:
    """The first minute of the 24 h window, held whole (as Binance's rolling ticker, exact to the minute)."""
    return (timezone.now() - timedelta(hours=24)).replace(second=0, microsecond=0)


def ticker_rows(markets, since: datetime):
    """Each market's ticker fields but the time (``Ticker``'s order), by pair, in one query: its last trade,
    best bid and ask with their sizes, and its trades since ``since`` from the matcher's per-minute candles."""
    last = Trade.objects.filter(market=OuterRef("pk")).order_by("-id")
    levels = BookLevel.objects.filter(market=OuterRef("pk"))
    bids = levels.filter(side=BookLevel.Side.BID).order_by("-price")
    asks = levels.filter(side=BookLevel.Side.ASK).order_by("price")
    window = Candle.objects.filter(market=OuterRef("pk"), minute__gte=since)
    return markets.order_by("pair").annotate(
        last_price=column(last, "price"), last_size=column(last, "size"),
        best_bid=column(bids, "price"), best_bid_size=column(bids, "size"),
        best_ask=column(asks, "price"), best_ask_size=column(asks, "size"),
        open_24h=column(window.order_by("minute"), "open"),
        high_24h=aggregated(window, Max("high")), low_24h=aggregated(window, Min("low")),
        volume_24h=aggregated(window, ExactSum("volume")),
        quote_volume_24h=aggregated(window, ExactSum("quote_volume")),
    ).values_list("pair", "tick_size", "lot_size", "quote__precision", "base__circulating_supply", "last_price",
                  "last_size", "best_bid", "best_bid_size", "best_ask", "best_ask_size", "open_24h", "high_24h",
                  "low_24h", "volume_24h", "quote_volume_24h")


def tickers(markets) -> list[Ticker]:
    """Every market's ticker, by pair, in one query (one snapshot)."""
    since = window_start()
    with store().snapshot():
        rows = list(ticker_rows(markets, since))
        now = to_milliseconds(timezone.now())
    return [Ticker.of_row(row, now) for row in rows]


class OneTicker:
    """``ticker_rows`` of one market compiled to SQL once per store (the ORM builds and
    compiles its nine subqueries in longer than the database takes to answer them), its market and window
    start filled in per call: the matcher's publisher reads a pair's ticker up to 4 times a second."""

    MARKET, SINCE = -7_654_321, datetime(1970, 1, 2, 3, 4, tzinfo=UTC)  # stand-ins, found in the parameters

    def __init__(self):
        self.reads: dict[object, tuple] = {}  # store: (compiled read, its parameters, where the stand-ins are)

    def compiled(self):
        read = self.reads.get(store())
        if read is None:
            queryset = ticker_rows(Market.objects.filter(pk=self.MARKET), self.SINCE)
            params = list(queryset.query.sql_with_params()[1])
            stand_ins = {self.MARKET: "market", connection.ops.adapt_datetimefield_value(self.SINCE): "since"}
            places = {index: stand_ins[value] for index, value in enumerate(params) if value in stand_ins}
            read = self.reads[store()] = (store().compiled(queryset), params, places)
        return read

    def __call__(self, market: Market) -> Ticker:
        compiled, params, places = self.compiled()
        values = {"market": market.pk, "since": connection.ops.adapt_datetimefield_value(window_start())}
        params = [values[places[index]] if index in places else param for index, param in enumerate(params)]
        row, = store().read(compiled, params)  # one statement: one snapshot of its own
        return Ticker.of_row(row, to_milliseconds(timezone.now()))


ticker = OneTicker()


def recent_trades(market: Market, *, limit: int, sort: str = "desc", before: int | None = None,
                  after: int | None = None, start_time: datetime | None = None,
                  end_time: datetime | None = None) -> list[Trade]:
    """The ``limit`` newest trades of the window (``sort="desc"``, newest first) or its ``limit`` oldest
    (``"asc"``, oldest first). Trades have no index by time (trading migration 0008): a window's ends are
    found by a binary search over the pair's trade ids, which rise with their batch's time (one matcher
    per pair writes them), so a window far back costs a few index probes, not a walk from either end."""
    pair_trades = Trade.objects.filter(market=market)
    trades = pair_trades.order_by("id" if sort == "asc" else "-id")
    if before is not None:
        trades = trades.filter(id__lt=before)
    if after is not None:
        trades = trades.filter(id__gt=after)
    if start_time is not None:
        first = first_id_stamped_since(pair_trades, "executed_at", start_time - CLOCK_SLACK)
        trades = trades.filter(executed_at__gte=start_time, id__gte=first if first is not None else 0)
    if end_time is not None:
        trades = trades.filter(executed_at__lt=end_time)
        # An end within the slack of the last instant a time holds has no trade stamped after it to look for.
        beyond = (first_id_stamped_since(pair_trades, "executed_at", end_time + CLOCK_SLACK)
                  if end_time < LAST_INSTANT - CLOCK_SLACK else None)
        if beyond is not None:
            trades = trades.filter(id__lt=beyond)
    return list(trades[:limit])


def assets() -> list[AssetWalletSettings]:
    """Every asset, by symbol, with what operators set for its wallets: the settings row, or the defaults
    (an unsaved one) when they set nothing."""
    chosen = AssetWalletSettings.objects.in_bulk()
    listed = []
    for asset in Asset.objects.order_by("symbol"):
        wallet_settings = chosen.get(asset.pk) or AssetWalletSettings()
        wallet_settings.asset = asset
        listed.append(wallet_settings)
    return listed
