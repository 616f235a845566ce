"""The simulated market's decisions: fed what a trader sees, it says what the trader does.

Pure: no Django, no I/O, no clock. Every choice comes from random generators seeded by the run's
seed and from the state it is fed (the public book, the acting trader's own live orders and balance,
as the server returned them), so two runs with the same seed from the same starting state decide
the same orders in the same order, however fast the server answers. `sandbox/simulator.py` sends
them (signed REST, the path every bot takes) and waits for each to be matched before the next.

The market:
- each pair's fair mid follows a mean-reverting random walk of its logarithm with occasional jumps;
- makers quote ladders of several levels on both sides, symmetric around the mid (shifted against
  their inventory), post-only, re-centred when the mid has moved away; past their inventory bound
  they keep only one smallest quote on the side that would add to it, so that the book stays two-sided;
- takers arrive at exponential intervals with market (and some IOC limit) orders of heavy-tailed
  (Pareto, capped) size, buying more often when the fair mid is above the book's; they also rest
  passive limits, place stops and cancel some of them, and past their inventory bound only reduce it;
- whenever the book has an empty side (or is crossed), the next event is a maker re-quoting.
"""

import math
import random
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

BUY, SELL = "buy", "sell"
BPS = Decimal("0.0001")

# Where a pair's mid starts when it has never traded.
REFERENCE_MIDS = {"BTC-USD": Decimal("63000"), "ETH-USD": Decimal("3000"), "ETH-BTC": Decimal("0.05")}


@dataclass(frozen=True)
class MakerStyle:
    half_spread_bps: int
    level_gap_bps: int
    levels: int
    size_units: tuple[int, int]  # the innermost level's size range, in units; each level deeper is half as big again


MAKERS = {
    "sim-maker-1": MakerStyle(half_spread_bps=4, level_gap_bps=3, levels=6, size_units=(20, 60)),
    "sim-maker-2": MakerStyle(half_spread_bps=7, level_gap_bps=5, levels=5, size_units=(40, 100)),
}
TAKERS = ("sim-taker-1", "sim-taker-2", "sim-taker-3")
TRADERS = (*MAKERS, *TAKERS)

# Sizes and funds are counted in units of the pair (MarketSpec.unit).
FUNDS_UNITS = {"maker": 6000, "taker": 2000}  # each trader's starting base per pair, and its value in quote
INVENTORY_BOUND_UNITS = {"maker": 1500, "taker": 400}  # away from the starting base
TAKE_SIZE = {"scale": 2.0, "alpha": 1.3, "cap": 300.0}  # Pareto(alpha) × scale units, capped
REST_SIZE = {"scale": 5.0, "alpha": 1.5, "cap": 120.0}
MAX_LIVE_TAKER_ORDERS = 6  # per taker and pair: beyond it a resting or stop event cancels the oldest instead
EVENT_KINDS = {"quote": 30, "take": 40, "rest": 12, "stop": 6, "cancel": 12}  # weights
ACTIONS_PER_EVENT = 3.5  # orders and cancels per event on average (measured): spaces events so that --rate holds
WALK = {"sigma": 0.00015, "theta": 0.0001, "jump_probability": 0.002, "jump": (0.002, 0.01)}


def round_down(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_FLOOR) * step


def round_up(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_CEILING) * step


def decimal(value: float, places: int = 6) -> Decimal:
    """A drawn float as an exact decimal of a few places."""
    return Decimal(repr(round(value, places)))


@dataclass(frozen=True)
class MarketSpec:
    pair: str
    base: str
    quote: str
    tick: Decimal
    lot: Decimal
    min_size: Decimal
    min_notional: Decimal
    mid: Decimal  # where the mid starts: the last trade, or a reference price

    @property
    def unit(self) -> Decimal:
        """Ten of the smallest orders the market accepts at its starting mid."""
        return round_up(10 * max(self.min_size, self.min_notional / self.mid), self.lot)

    def smallest_size(self, price: Decimal) -> Decimal:
        return round_up(max(self.min_size, self.min_notional / price), self.lot)

    def size(self, units: Decimal) -> Decimal:
        return round_down(units * self.unit, self.lot)

    def on_tick(self, price: Decimal) -> Decimal:
        return max(self.tick, round_down(price + self.tick / 2, self.tick))


def role(trader: str) -> str:
    return "maker" if trader in MAKERS else "taker"


def funding_targets(markets: list[MarketSpec]) -> dict[str, dict[str, Decimal]]:
    """Each trader's starting balances: for every pair, its base and that base's worth in quote (whole units,
    rounded up). The simulation measures inventory from these."""
    targets: dict[str, dict[str, Decimal]] = {trader: {} for trader in TRADERS}
    for trader, wallet in targets.items():
        for spec in markets:
            base = spec.unit * FUNDS_UNITS[role(trader)]
            wallet[spec.base] = wallet.get(spec.base, Decimal(0)) + base
            wallet[spec.quote] = wallet.get(spec.quote, Decimal(0)) + base * spec.mid
    return {trader: {asset: round_up(amount, Decimal(1)) for asset, amount in wallet.items()}
            for trader, wallet in targets.items()}


class MidWalk:
    """The pair's fair price: log(mid / start) mean-reverts weakly (so a long run stays near its start) under
    Gaussian steps and rare jumps; one step per event of the pair."""

    def __init__(self, spec: MarketSpec, rng: random.Random):
        self.spec, self.rng, self.x = spec, rng, 0.0
        self.mid = spec.mid

    def step(self) -> Decimal:
        rng = self.rng
        self.x += -WALK["theta"] * self.x + rng.gauss(0.0, WALK["sigma"])
        if rng.random() < WALK["jump_probability"]:
            self.x += rng.choice((-1, 1)) * rng.uniform(*WALK["jump"])
        self.mid = self.spec.on_tick(self.spec.mid * decimal(math.exp(self.x), 10))
        return self.mid


@dataclass(frozen=True)
class OwnOrder:
    order_id: int
    side: str
    type: str
    price: Decimal | None
    remaining: Decimal = Decimal(0)
    stop_price: Decimal | None = None


@dataclass(frozen=True)
class View:
    """What the acting trader sees, read just before it decides: the public book (best level first), its live
    orders in the pair (oldest first) and its total balance of the pair's base asset."""

    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    orders: tuple[OwnOrder, ...] = ()
    base_total: Decimal = Decimal(0)


@dataclass(frozen=True)
class Place:
    trader: str
    pair: str
    side: str
    type: str
    size: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    post_only: bool | None = None

    def order_fields(self) -> dict:
        """The keyword arguments of hkt_client's place_order."""
        optional = {"price": self.price, "stop_price": self.stop_price, "time_in_force": self.time_in_force,
                    "post_only": self.post_only}
        return {"pair": self.pair, "side": self.side, "type": self.type, "size": self.size,
                **{name: value for name, value in optional.items() if value is not None}}


@dataclass(frozen=True)
class Cancel:
    trader: str
    pair: str
    order_id: int


@dataclass(frozen=True)
class Event:
    at: float  # seconds from the start at the run's rate
    pair: str
    trader: str
    kind: str  # one of EVENT_KINDS


def needs_repair(view: View) -> bool:
    return not view.bids or not view.asks or view.bids[0][0] >= view.asks[0][0]


def heavy_tail_units(rng: random.Random, scale: float, alpha: float, cap: float) -> Decimal:
    """Pareto: most draws near ``scale``, a few many times it; capped so that one order cannot sweep the book."""
    return decimal(min(cap, scale * rng.paretovariate(alpha)))


@dataclass
class Simulation:
    seed: int
    markets: list[MarketSpec]
    rate: float = 5.0  # orders and cancels per second, on average
    clock: float = 0.0
    anchors: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (maker, pair) -> its ladder's mid
    repairs: int = 0

    def __post_init__(self):
        self.specs = {spec.pair: spec for spec in self.markets}
        self.pairs = sorted(self.specs)
        self.targets = funding_targets(self.markets)
        # One generator per purpose, so that the events drawn never depend on what a decision drew.
        self.events_rng = random.Random(f"{self.seed}:events")
        self.decisions_rng = random.Random(f"{self.seed}:decisions")
        self.walks = {pair: MidWalk(spec, random.Random(f"{self.seed}:walk:{pair}"))
                      for pair, spec in self.specs.items()}

    def mid(self, pair: str) -> Decimal:
        return self.walks[pair].mid

    def next_event(self) -> Event:
        """The next arrival: when (exponential gaps), where, who and what; the pair's mid takes a step."""
        rng = self.events_rng
        self.clock += rng.expovariate(1.0) * ACTIONS_PER_EVENT / self.rate
        pair = rng.choice(self.pairs)
        kind = rng.choices(list(EVENT_KINDS), weights=list(EVENT_KINDS.values()))[0]
        trader = rng.choice(list(MAKERS) if kind == "quote" else TAKERS)
        self.walks[pair].step()
        return Event(self.clock, pair, trader, kind)

    def first_things_first(self, event: Event, view: View) -> Event:
        """A book with an empty side (or crossed) is fixed before anything else: the event becomes a maker's
        re-quote, the makers taking turns."""
        if not needs_repair(view):
            return event
        maker = list(MAKERS)[self.repairs % len(MAKERS)]
        self.repairs += 1
        return Event(event.at, event.pair, maker, "repair")

    def decide(self, event: Event, view: View) -> list[Place | Cancel]:
        if event.kind in ("quote", "repair"):
            return self.quote(event, view, recentre=event.kind == "repair")
        if event.kind == "take":
            return self.take(event, view)
        if event.kind == "cancel" or len(view.orders) >= MAX_LIVE_TAKER_ORDERS:
            return self.cancel_one(event, view, oldest=event.kind != "cancel")
        return self.rest(event, view) if event.kind == "rest" else self.stop(event, view)

    def inventory_units(self, trader: str, spec: MarketSpec, view: View) -> Decimal:
        return (view.base_total - self.targets[trader][spec.base]) / spec.unit

    def reducing(self, side: str, inventory: Decimal, bound: int) -> str:
        """``side``, unless the inventory is at its bound: then the side that reduces it."""
        if inventory >= bound:
            return SELL
        if inventory <= -bound:
            return BUY
        return side

    # Makers.

    def ladder(self, maker: str, pair: str, centre: Decimal) -> tuple[list[Decimal], list[Decimal]]:
        """Bid and ask prices, innermost first, symmetric around ``centre`` (on the tick grid)."""
        spec, style = self.specs[pair], MAKERS[maker]
        half = max(1, int(self.mid(pair) * style.half_spread_bps * BPS / spec.tick)) * spec.tick
        gap = max(1, int(self.mid(pair) * style.level_gap_bps * BPS / spec.tick)) * spec.tick
        bids = [centre - half - level * gap for level in range(style.levels)]
        asks = [centre + half + level * gap for level in range(style.levels)]
        return bids, asks

    def quote(self, event: Event, view: View, recentre: bool) -> list[Place | Cancel]:
        spec, style, maker = self.specs[event.pair], MAKERS[event.trader], event.trader
        mid, key = self.mid(event.pair), (maker, event.pair)
        half = mid * style.half_spread_bps * BPS
        if recentre or key not in self.anchors or abs(mid - self.anchors[key]) >= 2 * half:
            self.anchors[key] = mid
        # Long: everything a little lower, to sell more and buy less; short, higher; never past the inner half-spread.
        lean = max(-1, min(1, self.inventory_units(maker, spec, view) / INVENTORY_BOUND_UNITS["maker"]))
        centre = self.anchors[key] - (half * lean * Decimal("0.8") / spec.tick).to_integral_value() * spec.tick
        bids, asks = self.ladder(maker, event.pair, centre)
        if lean >= 1:
            bids = bids[-1:]  # past the bound only a far, smallest bid remains, so the book keeps two sides
        if lean <= -1:
            asks = asks[-1:]
        # Never at or through another trader's best price (a post-only quote there would be refused): a side that
        # would be is moved away whole, so that it is still quoted.
        others_bid, others_ask = others_best(view)
        if others_ask is not None and bids and bids[0] >= others_ask:
            bids = [price - (bids[0] - others_ask + spec.tick) for price in bids]
        if others_bid is not None and asks and asks[0] <= others_bid:
            asks = [price + (others_bid - asks[0] + spec.tick) for price in asks]
        bids = [price for price in bids if price > 0]
        wanted = {(BUY, price): level for level, price in enumerate(bids)}
        wanted.update({(SELL, price): level for level, price in enumerate(asks)})
        live = {(order.side, order.price) for order in view.orders}
        stale = [order for order in view.orders if (order.side, order.price) not in wanted]
        # The old quotes go after the new are in, so that the book never thins out while a ladder moves; only those
        # a new quote would meet on the other side go first.
        in_the_way = [order for order in stale if (order.side == SELL and bids and order.price <= bids[0])
                      or (order.side == BUY and asks and order.price >= asks[0])]
        actions: list[Place | Cancel] = [Cancel(maker, event.pair, order.order_id) for order in in_the_way]
        for (side, price), level in sorted(wanted.items(), key=lambda item: (item[1], item[0][0] == SELL)):
            if (side, price) in live:
                continue
            if abs(lean) >= 1 and (side == BUY) == (lean > 0):
                size = spec.smallest_size(price)
            else:
                units = self.decisions_rng.randint(*style.size_units) * (1 + Decimal(level) / 2)
                size = max(spec.size(units), spec.smallest_size(price))
            actions.append(Place(maker, event.pair, side, "limit", size, price=price, post_only=True))
        return actions + [Cancel(maker, event.pair, order.order_id) for order in stale if order not in in_the_way]

    # Takers.

    def take(self, event: Event, view: View) -> list[Place]:
        spec, rng = self.specs[event.pair], self.decisions_rng
        inventory = self.inventory_units(event.trader, spec, view)
        bound = INVENTORY_BOUND_UNITS["taker"]
        if view.bids and view.asks:  # takers lean toward the fair price: they buy more when it is above the book
            book_mid = (view.bids[0][0] + view.asks[0][0]) / 2
            pull = max(-0.3, min(0.3, float((self.mid(event.pair) - book_mid) / book_mid) * 2000))
        else:
            pull = 0.0
        side = self.reducing(BUY if rng.random() < 0.5 + pull else SELL, inventory, bound)
        units = heavy_tail_units(rng, **TAKE_SIZE)
        room = bound - inventory if side == BUY else bound + inventory
        size = spec.size(min(units, max(room, Decimal(0))))
        opposite = view.asks if side == BUY else view.bids
        limit = rng.random() < 0.2
        if not opposite or size < spec.smallest_size(opposite[0][0]):
            return []
        if limit:  # a few ticks through the best price, whatever of it is not filled at once is cancelled
            through = spec.tick * rng.randint(0, 5)
            price = opposite[0][0] + through if side == BUY else opposite[0][0] - through
            if price <= 0:
                return []
            return [Place(event.trader, event.pair, side, "limit", size, price=price, time_in_force="IOC")]
        return [Place(event.trader, event.pair, side, "market", size)]

    def rest(self, event: Event, view: View) -> list[Place]:
        """A passive limit some way from the mid, post-only (it never takes); past the inventory bound, one
        that reduces it."""
        spec, rng = self.specs[event.pair], self.decisions_rng
        side = self.reducing(rng.choice((BUY, SELL)), self.inventory_units(event.trader, spec, view),
                             INVENTORY_BOUND_UNITS["taker"])
        distance = self.mid(event.pair) * BPS * rng.randint(5, 60)
        price = spec.on_tick(self.mid(event.pair) - distance if side == BUY else self.mid(event.pair) + distance)
        size = max(spec.size(heavy_tail_units(rng, **REST_SIZE)), spec.smallest_size(price))
        return [Place(event.trader, event.pair, side, "limit", size, price=price, post_only=True)]

    def stop(self, event: Event, view: View) -> list[Place]:
        """A stop 0.2-1 % away from the mid: a buy stop above it, a sell stop below; half of them stop-limits;
        past the inventory bound, one that reduces it."""
        spec, rng = self.specs[event.pair], self.decisions_rng
        side = self.reducing(rng.choice((BUY, SELL)), self.inventory_units(event.trader, spec, view),
                             INVENTORY_BOUND_UNITS["taker"])
        direction = 1 if side == BUY else -1
        mid = self.mid(event.pair)
        stop_price = spec.on_tick(mid * (1 + direction * BPS * rng.randint(20, 100)))
        size = max(spec.size(heavy_tail_units(rng, **REST_SIZE)), spec.smallest_size(stop_price))
        if rng.random() < 0.5:
            price = spec.on_tick(stop_price * (1 + direction * BPS * 20))
            return [Place(event.trader, event.pair, side, "stop", size, price=price, stop_price=stop_price)]
        return [Place(event.trader, event.pair, side, "stop", size, stop_price=stop_price)]

    def cancel_one(self, event: Event, view: View, oldest: bool) -> list[Cancel]:
        if not view.orders:
            return []
        order = view.orders[0] if oldest else self.decisions_rng.choice(view.orders)
        return [Cancel(event.trader, event.pair, order.order_id)]


def others_best(view: View) -> tuple[Decimal | None, Decimal | None]:
    """The best bid and ask of the book once the acting trader's own live limit orders are taken out of it."""
    own: dict[tuple[str, Decimal | None], Decimal] = {}
    for order in view.orders:
        if order.type == "limit":
            key = (order.side, order.price)
            own[key] = own.get(key, Decimal(0)) + order.remaining

    def best(side: str, levels) -> Decimal | None:
        return next((price for price, size in levels if size > own.get((side, price), Decimal(0))), None)

    return best(BUY, view.bids), best(SELL, view.asks)
