"""What an order request is, and how it is checked against its market before anything is written."""

import hashlib
import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from exchange.errors import InvalidField, MarketHalted
from exchange.money import AMOUNT_LIMIT
from trading.models import BookLevel, Market, Order, Side
from trading.settlement import limit_hold

# A market buy given by size may pay at most this much above the book's price for its size when it
# was accepted (or above the stop price, for a stop-market buy): its hold is size × that price, and
# it executes as IOC up to it, so a fast-moving book can never make it spend more than it holds.
MARKET_BUY_COLLAR = Decimal("0.05")


@dataclass(frozen=True)
class OrderRequest:
    pair: str
    side: str
    type: str
    price: Decimal | None = None
    size: Decimal | None = None
    funds: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = Order.TimeInForce.GTC
    post_only: bool = False
    stp: str = Order.SelfTradePrevention.CANCEL_OLDEST
    client_order_id: str | None = None
    trigger: str | None = None  # stops only; None: the side's own way (stop_trigger)

    def digest(self) -> str:
        """Equal for the same order however it was spelt ("63000" and "63000.00" are one price; a stop's
        trigger left out or given as its side's default is one trigger)."""
        canonical = {
            name: format(value.normalize(), "f") if isinstance(value, Decimal) else value
            for name, value in vars(self).items()  # the fields (asdict would deep-copy every value)
        }
        canonical["pair"] = self.pair.upper()
        if self.trigger is None or self.trigger == default_trigger(self.side):
            del canonical["trigger"]  # as digests were before stops had a trigger: their retries still match
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def default_trigger(side: str) -> str:
    """A stop's trigger when none is given: a buy stop above its stop price, a sell stop below."""
    return Order.Trigger.ABOVE if side == Side.BUY else Order.Trigger.BELOW


def stop_trigger(request: OrderRequest) -> str | None:
    """The trigger an order is written with: a stop's, or its side's default; None for other orders."""
    if request.type != Order.Type.STOP:
        return None
    return request.trigger or default_trigger(request.side)


def on_grid(value: Decimal, step: Decimal) -> bool:
    return value % step == 0


def check_against_market(market: Market, request: OrderRequest) -> None:
    """Status, tick and lot grids, minimum size and notional. Raises; changes nothing."""
    if market.status in (Market.Status.HALTED, Market.Status.CANCEL_ONLY):
        raise MarketHalted(market.pair, market.status)
    for field in ("price", "stop_price"):
        value = getattr(request, field)
        if value is not None and not on_grid(value, market.tick_size):
            raise InvalidField(field, f"Must be a multiple of the tick size {market.tick_size.normalize()}.")
    if request.size is not None:
        if not on_grid(request.size, market.lot_size):
            raise InvalidField("size", f"Must be a multiple of the lot size {market.lot_size.normalize()}.")
        if request.size < market.min_size:
            raise InvalidField("size", f"Must be at least the minimum size {market.min_size.normalize()}.")
    if request.funds is not None:
        if not on_grid(request.funds, market.tick_size * market.lot_size):
            raise InvalidField("funds", f"Must be a multiple of {(market.tick_size * market.lot_size).normalize()}.")
        if request.funds < market.min_notional:
            raise InvalidField("funds", f"Must be at least the minimum notional {market.min_notional.normalize()}.")
    reference = reference_price(market, request) if request.size is not None else None
    if reference is not None and reference * request.size < market.min_notional:
        minimum = market.min_notional.normalize()
        at = "" if request.price is not None else f" (at {reference.normalize()})"
        raise InvalidField("size", f"price × size must be at least the minimum notional {minimum}{at}.")


def reference_price(market: Market, request: OrderRequest) -> Decimal | None:
    """The price an order given by size is judged at for the minimum notional: its limit, else its
    stop price, else (a market order) the best price on the other side of the committed book; None
    when that side is empty (the order will find nothing to trade with)."""
    if request.price is not None:
        return request.price
    if request.stop_price is not None:
        return request.stop_price
    side = BookLevel.Side.ASK if request.side == Side.BUY else BookLevel.Side.BID
    best = BookLevel.objects.filter(market=market, side=side).order_by("price" if side == BookLevel.Side.ASK else "-price")
    return best.values_list("price", flat=True).first()


def ceil_to_tick(value: Decimal, tick: Decimal) -> Decimal:
    return (value / tick).to_integral_value(rounding=ROUND_CEILING) * tick


def protection_price(market: Market, request: OrderRequest) -> Decimal | None:
    """The price bound of a market or stop-market buy given by size; None for every other order."""
    if request.side != Side.BUY or request.size is None or request.price is not None:
        return None
    if request.type == Order.Type.STOP:
        reference = request.stop_price
    elif request.type == Order.Type.MARKET:
        reference = price_to_buy(market, request.size)
    else:
        return None
    return min(ceil_to_tick(reference * (1 + MARKET_BUY_COLLAR), market.tick_size), highest_price(market.tick_size))


def highest_price(tick: Decimal) -> Decimal:
    """The highest price on the tick grid that a price column holds: no order rests above it, so a
    protection price above it would bound nothing more, and could not be stored."""
    return ((AMOUNT_LIMIT / tick).to_integral_value(rounding=ROUND_CEILING) - 1) * tick


def price_to_buy(market: Market, size: Decimal) -> Decimal:
    """The worst ask a buy of ``size`` reaches on the committed book (the deepest ask if it is thinner)."""
    needed, worst = size, None
    asks = BookLevel.objects.filter(market=market, side=BookLevel.Side.ASK).order_by("price")
    for price, level_size in asks.values_list("price", "size").iterator(chunk_size=200):
        worst = price
        needed -= level_size
        if needed <= 0:
            break
    if worst is None:
        raise InvalidField("size", "There are no asks to buy from; give funds or a limit price instead.")
    return worst


def hold_for(market: Market, request: OrderRequest, protection: Decimal | None) -> tuple[int, Decimal]:
    """(asset id, amount) to move from available to locked when the order is accepted."""
    if request.funds is not None:
        return market.quote_id, request.funds
    asset_id = market.base_id if request.side == Side.SELL else market.quote_id
    return asset_id, limit_hold(request.side, request.price or protection, request.size)
