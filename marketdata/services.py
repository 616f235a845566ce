"""Read models of public market data: order book, ticker, recent trades, candles (markets: trading.markets).

They read what the matcher commits (BookState, BookLevel, Trade), never a cache of their own.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Max, Min
from django.utils import timezone

from exchange.errors import ErrorCode, Forbidden, InvalidParameter
from trading.models import BookLevel, BookState, Candle, Market, Trade
from trading.backends import store
from trading.sql import ExactSum

PUBLIC_MAX_DEPTH = 100
VERIFIED_MAX_DEPTH = 1000
DEFAULT_DEPTH = 100
DEFAULT_TRADES_LIMIT = 100
MAX_TRADES_LIMIT = 1000


@dataclass(frozen=True)
class BookSnapshot:
    sequence: int
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]


def book_sequence(market: Market) -> int:
    """The pair's committed book sequence (0 before its first delta)."""
    return BookState.objects.filter(market=market).values_list("sequence", flat=True).first() or 0


def order_book(market: Market, depth: int | None) -> BookSnapshot:
    """The committed book, ``depth`` levels a side (all of them for None), and its sequence."""
    with store().snapshot():
        sequence = book_sequence(market)
        levels = BookLevel.objects.filter(market=market).values_list("price", "size")
        bids = levels.filter(side=BookLevel.Side.BID).order_by("-price")
        asks = levels.filter(side=BookLevel.Side.ASK).order_by("price")
        if depth is not None:
            bids, asks = bids[:depth], asks[:depth]
        return BookSnapshot(sequence, list(bids), list(asks))


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
    last_price: Decimal | None
    last_size: Decimal | None
    best_bid: Decimal | None
    best_ask: Decimal | None
    open_24h: Decimal | None
    high_24h: Decimal | None
    low_24h: Decimal | None
    volume_24h: Decimal
    quote_volume_24h: Decimal
    circulating_supply: Decimal | None

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


def ticker(market: Market) -> Ticker:
    """Last trade, best bid and ask, and the last 24 h of trades at minute resolution: the window
    holds the minute 24 h ago whole (as Binance's rolling ticker, whose window is exact to the
    minute), from the matcher's per-minute candles."""
    with store().snapshot():
        last = Trade.objects.newest_first(market).values("price", "size").first()
        window = Candle.objects.filter(market=market,
                                       minute__gte=(timezone.now() - timedelta(hours=24)).replace(second=0, microsecond=0))
        first_in_window = window.order_by("minute").values_list("open", flat=True).first()
        stats = window.aggregate(
            high=Max("high"),
            low=Min("low"),
            volume=ExactSum("volume"),
            quote_volume=ExactSum("quote_volume"),
        )
        best = BookLevel.objects.filter(market=market)
        best_bid = best.filter(side=BookLevel.Side.BID).aggregate(p=Max("price"))["p"]
        best_ask = best.filter(side=BookLevel.Side.ASK).aggregate(p=Min("price"))["p"]
    return Ticker(
        last_price=last and last["price"],
        last_size=last and last["size"],
        best_bid=best_bid,
        best_ask=best_ask,
        open_24h=first_in_window,
        high_24h=stats["high"],
        low_24h=stats["low"],
        volume_24h=stats["volume"] or Decimal(0),
        quote_volume_24h=stats["quote_volume"] or Decimal(0),
        circulating_supply=market.base.circulating_supply,
    )


def recent_trades(market: Market, *, limit: int, before: int | None = None, start_time: datetime | None = None,
                  end_time: datetime | None = None) -> list[Trade]:
    """Newest first. Trades have no index by time (trading migration 0008): a window is a filter on the
    walk back from the newest (or from ``before``), so a window far back costs that walk."""
    trades = Trade.objects.newest_first(market)
    if before is not None:
        trades = trades.filter(id__lt=before)
    if start_time is not None:
        trades = trades.filter(executed_at__gte=start_time)
    if end_time is not None:
        trades = trades.filter(executed_at__lt=end_time)
    return list(trades[:limit])


def minute_candles(market: Market, *, limit: int) -> list[Candle]:
    """The pair's ``limit`` latest per-minute candles, oldest first (minutes without trades have none)."""
    newest = Candle.objects.filter(market=market).order_by("-minute")[:limit]
    return list(reversed(newest))
