"""Pure, deterministic price-time-priority matching engine for one spot pair.

No Django, no I/O, standard library only: the persistence wrapper feeds
commands to :meth:`OrderBook.apply` and turns the returned events into rows.

Units
-----
Everything is an ``int``: prices in ticks, sizes in lots, and quote amounts
("funds") in notional units = price_ticks * size_lots.  Decimal conversion
happens outside.  Prices, sizes, funds and stop prices must be > 0.

Commands
--------
``NewOrder(order_id, account_id, side, type, price, size, funds, stop_price,
time_in_force='GTC', post_only=False, stp='cancel_oldest', trigger=None)`` and
``CancelOrder(order_id)``.  Side, type, time in force, self-trade
prevention and a stop's trigger take the values of the ``Side``,
``OrderType``, ``TimeInForce``, ``SelfTradePrevention`` and ``StopTrigger``
string enums (members or the equal strings).
``apply`` raises ``ValueError`` (with no side effect) for a structurally impossible command: unknown side/type/TIF/STP
mode, a limit without price or size, a market with neither or both of size
and funds, funds on a sell or on a limit, ``post_only`` on a market order,
FOK with funds, a non-positive number, a ``trigger`` other than None, 'above'
or 'below' or on an order that is not a stop, or an order id the book
already holds.

Events (NamedTuples, field order is part of the contract)
---------------------------------------------------------
``Rested(order_id, side, price, remaining)``
``Trade(maker_order_id, taker_order_id, maker_account_id, taker_account_id,
taker_side, price, size)`` - price is always the maker's (resting) price.
``Filled(order_id)`` - the order has nothing left (terminal).
``Cancelled(order_id, remaining, reason)`` - reason 'user' or 'self_trade'.
``Expired(order_id, remaining)`` - unfilled remainder of an IOC/FOK/market.
``Rejected(order_id, reason)`` - 'POST_ONLY_WOULD_TAKE'.
``Untriggered(order_id)`` / ``Triggered(order_id)`` - stop orders.
``CancelRejected(order_id, reason)`` - 'not_found'.

Terminal outcomes and partial fills
-----------------------------------
Every accepted order gets exactly ONE terminal event, ever: ``Filled``,
``Cancelled``, ``Expired`` or ``Rejected``.  ``Rested``, ``Untriggered`` and
``Triggered`` are not terminal (the order lives on).  Partial fills are only
``Trade`` events: an order's filled size is the sum of the ``size`` of the
trades naming it, and ``remaining`` in ``Rested``/``Cancelled``/``Expired``
is what was still open at that moment.  So for a size-based order:
sum(trade sizes) + remaining-in-terminal-event == size (0 when ``Filled``).

A maker's ``Filled`` comes right after the ``Trade`` that emptied it; the
taker's terminal event (or ``Rested``) comes after all of its trades.

Funds-market buys (``type='market'``, ``funds`` instead of ``size``): the
order buys whole lots while ``funds_left >= price`` of the next lot
(``funds_left -= price * lots`` per trade).  It closes with ``Filled`` when
the funds are spent exactly (0 left), otherwise with
``Expired(order_id, funds_left)``, where ``remaining`` is the UNSPENT FUNDS
in notional units (possibly dust smaller than one lot; never 0).  If
self-trade prevention stops it, ``Cancelled(order_id, funds_left,
'self_trade')`` likewise carries funds.  A funds stop cancelled by the user
reports its funds as ``remaining`` too.

Matching rules
--------------
* Price-time priority, FIFO within a level, trades at the maker's price.
* GTC rests its remainder; IOC expires it; FOK first checks that the whole
  size can fill right now (own orders do not count, and under
  'cancel_newest'/'cancel_both' meeting an own order before the size is
  reached means it cannot fill) and otherwise expires whole with no trade
  and no side effect.  Market orders never rest (remainder expires); a
  market FOK is all-or-nothing like a limit FOK.
* post_only: a limit that would cross the best opposite price at arrival is
  ``Rejected('POST_ONLY_WOULD_TAKE')``, nothing else happens.
* Self-trade prevention uses the INCOMING order's ``stp``: 'cancel_oldest'
  cancels each resting own order it meets (``Cancelled(.., 'self_trade')``)
  and keeps matching; 'cancel_newest' cancels the incoming remainder;
  'cancel_both' cancels the resting one, then the incoming remainder.
* Stops: a stop with ``trigger='above'`` triggers when a trade prints at
  >= stop_price, one with ``trigger='below'`` when a trade prints at <=
  stop_price, whatever its side (a take-profit sell waits above the market,
  a buy stop below it); ``trigger=None`` is the side's usual direction,
  above for a buy and below for a sell.  Every trade counts, not only the
  last one of a sweep.  If ``last_trade_price`` already satisfies the
  condition on arrival, the stop triggers at once (``Triggered`` then its
  own events, no ``Untriggered``).  Otherwise ``Untriggered``.  Stops
  triggered by an order's trades enter after that order finished, in their
  order of acceptance, each announced by ``Triggered`` immediately followed
  by its events.  Their trades may trigger more: after each order finishes,
  the stops its trades fired join the back of one FIFO queue (in acceptance
  order), all inside the same ``apply`` call.  With ``price`` a triggered
  stop is a limit (with the stop's TIF/post_only/stp), without it a market
  order (by size or by funds).

Queries
-------
``best_bid()``, ``best_ask()`` -> ticks or None; ``level_size(side, price)``
-> lots (0 if none); ``depth(n=None)`` -> (bids high->low, asks low->high)
lists of (price, size); ``last_trade_price`` (int or None, settable for
recovery; ``last_trade_between(below, above)`` recovers one that printed
between two ticks); ``drain_touched_levels()`` -> set of (side, price) whose
aggregate changed since the previous drain; ``open_order(id)`` ->
``OpenOrder(order_id, account_id, side, price, remaining)`` or None;
``open_orders()``; ``stop_order(id)`` -> the waiting ``NewOrder`` or None;
``stop_orders()``; ``len(book)`` = number of resting orders.

Recovery
--------
``load_resting(order_id, account_id, side, price, remaining)`` appends a
resting order at the back of its level (call it in original time priority; raises ValueError if it would cross),
``load_resting_many(rows)`` appends many, each row beginning (order_id,
account_id, is_buy, price, remaining), checking once at the end that the
book does not cross, and ``load_stop(NewOrder)`` re-adds a waiting stop (call
it in original acceptance order).  None of them matches, triggers, emits
events or marks touched levels.

Implementation notes (why it is fast)
-------------------------------------
Each side is a dict level-key -> ``_Level`` (a deque of orders + the live
aggregate) and a sorted list of the keys of non-empty levels.  Keys are
+price for bids and -price for asks, so on both sides the best level is the
LAST key (``keys[-1]``, ``keys.pop()``) and one matching loop serves both
sides.  Cancels are lazy (O(1)); emptied levels are kept for reuse.  Waiting
stops sit in two heaps by trigger direction (not by side: the direction is
all a trade price is checked against), keyed by stop price so that the next
to fire is at the top, with lazy deletion.
``validate_internal_state()`` checks that these structures agree.
The hot path is annotated (``Final`` constants, typed ints) for the mypyc build
of this same file (bin/build-engine, trading.engine_impl); annotations cost the
pure module nothing at run time.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from enum import StrEnum
from heapq import heapify, heappop, heappush
from typing import Final, NamedTuple

__all__ = [
    'NewOrder', 'CancelOrder', 'OrderBook', 'OpenOrder',
    'Side', 'OrderType', 'TimeInForce', 'SelfTradePrevention', 'StopTrigger',
    'Rested', 'Trade', 'Filled', 'Cancelled', 'Expired', 'Rejected',
    'Untriggered', 'Triggered', 'CancelRejected',
    'POST_ONLY_WOULD_TAKE',
]

POST_ONLY_WOULD_TAKE: Final = 'POST_ONLY_WOULD_TAKE'


# String enums: members equal (and hash like) their values, so callers may
# pass either, and events carry the side exactly as the command gave it.
class Side(StrEnum):
    BUY = 'buy'
    SELL = 'sell'


class OrderType(StrEnum):
    LIMIT = 'limit'
    MARKET = 'market'
    STOP = 'stop'


class TimeInForce(StrEnum):
    GTC = 'GTC'
    IOC = 'IOC'
    FOK = 'FOK'


class SelfTradePrevention(StrEnum):
    """Decided by the INCOMING order's mode when it meets its own resting order."""
    CANCEL_OLDEST = 'cancel_oldest'   # cancel the resting order, keep matching
    CANCEL_NEWEST = 'cancel_newest'   # cancel the incoming remainder
    CANCEL_BOTH = 'cancel_both'       # cancel the resting order, then the incoming remainder


class StopTrigger(StrEnum):
    """Which way the last trade price must cross a stop's stop_price for it to fire."""
    ABOVE = 'above'   # a trade at or above stop_price
    BELOW = 'below'   # a trade at or below stop_price


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

class NewOrder(NamedTuple):
    # The str fields take a member of their enum or the equal plain str (the compiled build checks
    # the declared types, so they say str).
    order_id: int
    account_id: int
    side: str                      # Side
    type: str                      # OrderType
    price: int | None = None
    size: int | None = None
    funds: int | None = None
    stop_price: int | None = None
    time_in_force: str = TimeInForce.GTC
    post_only: bool = False
    stp: str = SelfTradePrevention.CANCEL_OLDEST
    trigger: str | None = None     # StopTrigger, stops only; None: above for a buy, below for a sell


class CancelOrder(NamedTuple):
    order_id: int


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------

class Rested(NamedTuple):
    order_id: int
    side: str
    price: int
    remaining: int


class Trade(NamedTuple):
    maker_order_id: int
    taker_order_id: int
    maker_account_id: int
    taker_account_id: int
    taker_side: str
    price: int
    size: int


class Filled(NamedTuple):
    order_id: int


class Cancelled(NamedTuple):
    order_id: int
    remaining: int
    reason: str                  # 'user' | 'self_trade'


class Expired(NamedTuple):
    order_id: int
    remaining: int               # lots, or unspent funds for a funds-market buy


class Rejected(NamedTuple):
    order_id: int
    reason: str


class Untriggered(NamedTuple):
    order_id: int


class Triggered(NamedTuple):
    order_id: int


class CancelRejected(NamedTuple):
    order_id: int
    reason: str = 'not_found'


# The event classes again, as constants: the compiled build reads these from C statics, where the
# classes' own names are a dict lookup in the module's globals at every use.
_TRADE: Final = Trade
_FILLED: Final = Filled
_RESTED: Final = Rested
_CANCELLED: Final = Cancelled
_EXPIRED: Final = Expired
_REJECTED: Final = Rejected
_TRIGGERED: Final = Triggered
_UNTRIGGERED: Final = Untriggered
_CANCEL_REJECTED: Final = CancelRejected


class OpenOrder(NamedTuple):
    """Read-only view of a resting order (see :meth:`OrderBook.open_order`)."""
    order_id: int
    account_id: int
    side: str
    price: int
    remaining: int


# --------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------

_SIDES = frozenset(Side)
_TIME_IN_FORCE = frozenset(TimeInForce)
_STP_MODES = frozenset(SelfTradePrevention)
_TRIGGERS = frozenset((None, *StopTrigger))
# The hot path compares fields with these plain-string values: a member equals
# its value, and two exact strs compare fastest (see docs/performance.md).
_BUY: Final = Side.BUY.value
_SELL: Final = Side.SELL.value
_LIMIT: Final = OrderType.LIMIT.value
_MARKET: Final = OrderType.MARKET.value
_STOP: Final = OrderType.STOP.value
_GTC: Final = TimeInForce.GTC.value
_FOK: Final = TimeInForce.FOK.value
_CANCEL_OLDEST: Final = SelfTradePrevention.CANCEL_OLDEST.value
_CANCEL_NEWEST: Final = SelfTradePrevention.CANCEL_NEWEST.value
_ABOVE: Final = StopTrigger.ABOVE.value
# Crossing threshold of a market order: below every level key (keys are +/- prices in ticks; an
# integer keeps the engine all-integer, and no price on a sane grid comes near it).
_NO_LIMIT: Final = -(10 ** 60)
# tuple.__new__ builds a NamedTuple without its Python-level __new__: half the cost, on every
# Trade/Filled/Rested (docs/performance.md).
_new: Final = tuple.__new__


# A resting order is a small list indexed by the names below, not an object:
# a list is much cheaper to build than a slotted instance on CPython 3.11
# (docs/performance.md), and one is built for every order that rests.
#   KEY: +price for a bid, -price for an ask, so both sides sort with the
#        best level LAST and the sign tells the side;
#   REMAINING == 0 marks an order cancelled lazily while still queued.
_ORDER_ID: Final = 0
_ACCOUNT_ID: Final = 1
_REMAINING: Final = 2
_KEY: Final = 3


class _Level:
    """FIFO queue of one price level plus its live aggregate size.

    Cancels are lazy (O(1)): the order is zeroed and left in the deque, and
    skipped when it reaches the front; ``dead`` counts such entries so the
    deque can be compacted when they pile up behind long-lived orders.
    """
    __slots__ = ('orders', 'total', 'dead')
    orders: deque[list]
    total: int
    dead: int

    def __init__(self) -> None:
        self.orders = deque()
        self.total = 0
        self.dead = 0


def _bad(message: str):
    raise ValueError(message)


class OrderBook:
    """Order book and matching engine of one pair; see the module docstring."""

    def __init__(self, pair: str):
        self.pair = pair
        self.last_trade_price: int | None = None
        # Set only by recovery (last_trade_between): the last trade printed strictly between
        # last_trade_price and this tick (a grid made coarser since); None once a trade prints here.
        self._last_trade_ceiling: int | None = None
        # key -> _Level; keys sorted ascending so the best level is at [-1].
        self._bid_levels: dict[int, _Level] = {}
        self._ask_levels: dict[int, _Level] = {}
        self._bid_keys: list[int] = []
        self._ask_keys: list[int] = []
        self._orders: dict[int, list] = {}          # resting, by order id
        self._touched: set[int] = set()            # level keys
        # Waiting stops: order_id -> (seq, NewOrder); heaps hold
        # (trigger key, seq, order_id) and are cleaned lazily.
        self._stops: dict[int, tuple[int, NewOrder]] = {}
        self._above_stops: list[tuple[int, int, int]] = []  # (stop_price, ...): lowest fires first
        self._below_stops: list[tuple[int, int, int]] = []  # (-stop_price, ...): highest fires first
        self._stop_seq = 0
        # (lowest, highest) trade price since stops were last checked; only
        # tracked while stops are waiting.
        self._range: tuple[int, int] | None = None

    # ------------------------------------------------------------------
    # Commands
    # ------------------------------------------------------------------

    def apply(self, command) -> list:
        """Apply one command and return its events (see module docstring)."""
        events: list = []
        if command.__class__ is NewOrder:
            self._new_order(command, events)
        elif command.__class__ is CancelOrder:
            self._cancel(command.order_id, events)
        else:
            raise TypeError(f'not a command: {command!r}')
        if self._range is not None:
            self._run_stops(events)
        return events

    # ------------------------------------------------------------------
    # Matching
    # ------------------------------------------------------------------

    def _new_order(self, command: NewOrder, events: list) -> None:
        """Validate a NewOrder, then match it / rest it / park it (stop).

        Everything is validated before the first change, so a ValueError
        leaves the book untouched.
        """
        (order_id, account_id, side, order_type, price, size, funds,
         stop_price, tif, post_only, stp, trigger) = command
        if side == _BUY:
            is_buy = True
        elif side == _SELL:
            is_buy = False
        else:
            _bad(f'side must be buy or sell, not {side!r}')
        # (Checking the usual value first skips the set lookup.)
        if ((tif != _GTC and tif not in _TIME_IN_FORCE)
                or (stp != _CANCEL_OLDEST and stp not in _STP_MODES)):
            _bad(f'bad time_in_force {tif!r} or stp {stp!r}')
        if order_id in self._orders or (self._stops and order_id in self._stops):
            _bad(f'order {order_id} is already on the book')
        if order_type == _LIMIT:
            if (price is None or size is None or funds is not None
                    or stop_price is not None or trigger is not None
                    or price <= 0 or size <= 0):
                _bad('a limit order needs a positive price and size only')
        elif order_type == _MARKET:
            self._check_market(is_buy, price, size, funds,
                               stop_price if trigger is None else trigger, tif, post_only)
        elif order_type == _STOP:
            self._accept_stop(command, is_buy, events)
            return
        else:
            _bad(f'bad order type {order_type!r}')
        # A limit (price), or a market order by size or by funds (price None).
        if is_buy:
            opp_levels, opp_keys = self._ask_levels, self._ask_keys
            threshold = _NO_LIMIT if price is None else -price
        else:
            opp_levels, opp_keys = self._bid_levels, self._bid_keys
            threshold = _NO_LIMIT if price is None else price
        append = events.append
        # What the taker still has to fill (validated: exactly one of size and funds).
        left: int = size if funds is None else funds  # type: ignore[assignment]
        if opp_keys and opp_keys[-1] >= threshold:
            # The order crosses: it will take liquidity.
            if post_only:
                append(_new(_REJECTED, (order_id, POST_ONLY_WOULD_TAKE)))
                return
            if tif == _FOK and not self._fok_fillable(is_buy, threshold, account_id,
                                                      left, stp):
                append(_new(_EXPIRED, (order_id, size)))
                return
            # The maker walk: best level first while it crosses, FIFO within a
            # level, at the maker's price.  ``left`` is lots, or notional funds
            # (then each level fills the whole lots the funds still buy there).
            by_funds = funds is not None
            index = self._orders
            touched = self._touched
            first_price = last_price = None   # of the first and latest trades
            stopped = False                   # self-trade prevention cancelled the taker
            while opp_keys:
                key = opp_keys[-1]
                if key < threshold:
                    break
                trade_price = -key if is_buy else key
                want = left // trade_price if by_funds else left    # lots to take here
                if not want:
                    break                  # funds do not buy one more lot
                level = opp_levels[key]
                orders = level.orders
                if last_price is None:
                    first_price = trade_price
                before = level.total
                wanted = want
                while orders:
                    maker = orders[0]
                    maker_id, maker_account, maker_remaining, _ = maker
                    if not maker_remaining:                 # lazily cancelled
                        orders.popleft()
                        level.dead -= 1
                        continue
                    if maker_account == account_id:
                        # Self-trade prevention, decided by the taker's mode.
                        if stp != _CANCEL_NEWEST:
                            orders.popleft()
                            del index[maker_id]
                            maker[_REMAINING] = 0
                            level.total -= maker_remaining
                            append(_new(_CANCELLED, (maker_id, maker_remaining,
                                                    'self_trade')))
                        if stp != _CANCEL_OLDEST:
                            stopped = True
                            break
                        continue
                    last_price = trade_price
                    if maker_remaining <= want:
                        # The maker is used up.
                        orders.popleft()
                        del index[maker_id]
                        level.total -= maker_remaining
                        want -= maker_remaining
                        append(_new(_TRADE, (maker_id, order_id, maker_account,
                                            account_id, side, trade_price,
                                            maker_remaining)))
                        append(_new(_FILLED, (maker_id,)))
                        if not want:
                            break
                    else:
                        # The taker is used up here; the maker keeps its place.
                        maker[_REMAINING] = maker_remaining - want
                        level.total -= want
                        append(_new(_TRADE, (maker_id, order_id, maker_account,
                                            account_id, side, trade_price, want)))
                        want = 0
                        break
                if level.total != before:
                    touched.add(key)
                if not level.total:
                    # Level emptied: off the sorted keys, kept for reuse.
                    opp_keys.pop()
                    if orders:
                        orders.clear()          # zeroed leftovers
                        level.dead = 0
                left = left - (wanted - want) * trade_price if by_funds else want
                if stopped or not left:
                    break
            if last_price is not None:
                self.last_trade_price = last_price
                self._last_trade_ceiling = None
                if self._stops:
                    self._note_trades(first_price, last_price)
            if stopped:
                # Only ever set while something remained to fill.
                append(_new(_CANCELLED, (order_id, left, 'self_trade')))
                return

        # For a market buy by funds, what is left (never rested) is funds.
        if not left:
            append(_new(_FILLED, (order_id,)))
        elif price is None or tif != _GTC:
            append(_new(_EXPIRED, (order_id, left)))
        else:
            # Rest at the back of the level (the most common outcome).
            key = price if is_buy else -price
            self._rest(is_buy, [order_id, account_id, left, key])
            self._touched.add(key)
            append(_new(_RESTED, (order_id, side, price, left)))

    def _open_level(self, is_buy: bool, key: int) -> _Level:
        """Put level ``key`` (new or emptied) back on its side's sorted keys."""
        levels = self._bid_levels if is_buy else self._ask_levels
        keys = self._bid_keys if is_buy else self._ask_keys
        level = levels.get(key)
        if level is None:
            if len(levels) > 2 * len(keys) + 256:
                # Emptied levels are kept for reuse (cheaper than rebuilding
                # them on the next order); forget them when they pile up.
                for stale in [k for k, lv in levels.items() if not lv.total]:
                    del levels[stale]
            level = levels[key] = _Level()
        insort(keys, key)
        return level

    def _fok_fillable(self, is_buy: bool, threshold: int, account_id: int, size: int, stp: str) -> bool:
        """Could ``size`` fill right now, not counting own orders?"""
        if is_buy:
            opp_levels, opp_keys = self._ask_levels, self._ask_keys
        else:
            opp_levels, opp_keys = self._bid_levels, self._bid_keys
        available = 0
        for key in reversed(opp_keys):
            if key < threshold:
                return False
            for maker in opp_levels[key].orders:
                if not maker[_REMAINING]:
                    continue
                if maker[_ACCOUNT_ID] == account_id:
                    if stp == _CANCEL_OLDEST:
                        continue
                    return False          # STP would stop the order here
                available += maker[_REMAINING]
                if available >= size:
                    return True
        return False

    @staticmethod
    def _check_market(is_buy, price, size, funds, stop_price, tif, post_only):
        if price is not None or stop_price is not None:
            _bad('a market order has no price, stop_price or trigger')
        if post_only:
            _bad('post_only applies to limit orders only')
        if (size is None) == (funds is None):
            _bad('a market order needs exactly one of size and funds')
        if size is not None:
            if size <= 0:
                _bad('size must be positive')
        else:
            if not is_buy:
                _bad('only a market buy can use funds')
            if funds <= 0:
                _bad('funds must be positive')
            if tif == _FOK:
                _bad('FOK is not supported with funds')

    # ------------------------------------------------------------------
    # Cancels
    # ------------------------------------------------------------------

    def _cancel(self, order_id: int, events: list) -> None:
        order = self._orders.pop(order_id, None)
        if order is None:
            waiting = self._stops.pop(order_id, None)
            if waiting is None:
                events.append(_new(_CANCEL_REJECTED, (order_id, 'not_found')))
                return
            stop = waiting[1]
            remaining = stop.size if stop.size is not None else stop.funds
            events.append(_new(_CANCELLED, (order_id, remaining, 'user')))
            self._maybe_compact_stops()
            return
        key = order[_KEY]
        remaining = order[_REMAINING]
        order[_REMAINING] = 0
        level = (self._bid_levels if key > 0 else self._ask_levels)[key]
        level.total -= remaining
        if not level.total:
            # Level emptied: off the sorted keys, kept (cleared) for reuse.
            keys = self._bid_keys if key > 0 else self._ask_keys
            del keys[bisect_left(keys, key)]
            level.orders.clear()
            level.dead = 0
        else:
            level.dead += 1
            if level.dead > 32 and level.dead * 2 > len(level.orders):
                level.orders = deque([o for o in level.orders if o[_REMAINING]])
                level.dead = 0
        self._touched.add(key)
        events.append(_new(_CANCELLED, (order_id, remaining, 'user')))

    # ------------------------------------------------------------------
    # Stops
    # ------------------------------------------------------------------

    @staticmethod
    def _check_stop(command, is_buy):
        if command.stop_price is None or command.stop_price <= 0:
            _bad('a stop order needs a positive stop_price')
        if command.trigger not in _TRIGGERS:
            _bad(f'trigger must be above, below or None, not {command.trigger!r}')
        price, size, funds = command.price, command.size, command.funds
        if price is not None:
            if size is None or funds is not None:
                _bad('a stop-limit order needs size, not funds')
            if price <= 0 or size <= 0:
                _bad('price and size must be positive')
        else:
            OrderBook._check_market(is_buy, None, size, funds, None,
                                    command.time_in_force, command.post_only)

    def last_trade_between(self, below: int, above: int) -> None:
        """Recovery of a last trade that printed between the ticks ``below`` and ``above`` = ``below`` + 1
        (off a grid made coarser since): a stop arriving now triggers at once only if that price met its
        condition, so 'above' stops are checked against ``below`` and 'below' stops against ``above``."""
        self.last_trade_price, self._last_trade_ceiling = below, above

    @staticmethod
    def _fires_above(command, is_buy) -> bool:
        trigger = command.trigger
        return is_buy if trigger is None else trigger == _ABOVE

    def _accept_stop(self, command, is_buy, events):
        self._check_stop(command, is_buy)
        above = self._fires_above(command, is_buy)
        last = self.last_trade_price
        if not above and self._last_trade_ceiling is not None:
            last = self._last_trade_ceiling  # at or below the stop price only if the price that printed was
        if last is not None and (last >= command.stop_price if above else last <= command.stop_price):
            events.append(_new(_TRIGGERED, (command.order_id,)))
            self._enter_triggered(command, events)
            return
        self._add_stop(command, above)
        events.append(_new(_UNTRIGGERED, (command.order_id,)))

    def _add_stop(self, command, above):
        self._stop_seq += 1
        seq = self._stop_seq
        self._stops[command.order_id] = (seq, command)
        if above:
            heappush(self._above_stops, (command.stop_price, seq, command.order_id))
        else:
            heappush(self._below_stops, (-command.stop_price, seq, command.order_id))

    def _enter_triggered(self, command, events):
        """Run a triggered stop as the limit or market order it becomes."""
        self._new_order(command._replace(
            type=_LIMIT if command.price is not None else _MARKET,
            stop_price=None, trigger=None), events)

    def _note_trades(self, first_price, last_price):
        """Widen the traded price range that waiting stops are checked against."""
        low, high = ((first_price, last_price) if first_price <= last_price
                     else (last_price, first_price))
        if self._range is not None:
            low = min(low, self._range[0])
            high = max(high, self._range[1])
        self._range = (low, high)

    def _pop_triggered(self):
        """Remove and return the stops the recorded trade range triggers."""
        low, high = self._range
        self._range = None
        stops = self._stops
        fired = []
        heap = self._above_stops
        while heap and heap[0][0] <= high:          # a trade >= stop
            _, seq, order_id = heappop(heap)
            waiting = stops.get(order_id)
            if waiting is not None and waiting[0] == seq:
                del stops[order_id]
                fired.append(waiting)
        heap = self._below_stops
        while heap and -heap[0][0] >= low:          # a trade <= stop
            _, seq, order_id = heappop(heap)
            waiting = stops.get(order_id)
            if waiting is not None and waiting[0] == seq:
                del stops[order_id]
                fired.append(waiting)
        fired.sort()                                 # acceptance order (seq)
        return [command for _, command in fired]

    def _run_stops(self, events):
        """Trigger stops (FIFO cascade) until nothing more fires."""
        pending = deque()
        while True:
            if self._range is not None:
                pending.extend(self._pop_triggered())
            if not pending:
                return
            command = pending.popleft()
            events.append(_new(_TRIGGERED, (command.order_id,)))
            self._enter_triggered(command, events)

    def _maybe_compact_stops(self):
        # Cancelled stops stay in the heaps until popped; rebuild the heaps
        # when stale entries dominate so memory stays proportional.
        stale = len(self._above_stops) + len(self._below_stops) - len(self._stops)
        if stale > 64 and stale > len(self._stops):
            live = self._stops
            self._above_stops = [e for e in self._above_stops
                                 if live.get(e[2], (None,))[0] == e[1]]
            self._below_stops = [e for e in self._below_stops
                                 if live.get(e[2], (None,))[0] == e[1]]
            heapify(self._above_stops)
            heapify(self._below_stops)

    # ------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------

    def best_bid(self) -> int | None:
        keys = self._bid_keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self._ask_keys
        return -keys[-1] if keys else None

    def level_counts(self) -> tuple[int, int]:
        """(bid levels, ask levels) with resting size."""
        return len(self._bid_keys), len(self._ask_keys)

    def level_size(self, side: str, price: int) -> int:
        if side == _BUY:
            level = self._bid_levels.get(price)
        elif side == _SELL:
            level = self._ask_levels.get(-price)
        else:
            raise ValueError(f'side must be buy or sell, not {side!r}')
        return level.total if level is not None else 0

    def depth(self, n: int | None = None):
        """(bids, asks): lists of (price, size), best first, at most n each."""
        bid_keys = self._bid_keys
        ask_keys = self._ask_keys
        if n is None:
            n = max(len(bid_keys), len(ask_keys))
        bids = [(k, self._bid_levels[k].total) for k in reversed(bid_keys[-n:])] if n > 0 else []
        asks = [(-k, self._ask_levels[k].total) for k in reversed(ask_keys[-n:])] if n > 0 else []
        return bids, asks

    def drain_touched_levels(self) -> set[tuple[str, int]]:
        """(side, price) of levels whose aggregate changed since last drain."""
        touched = self._touched
        self._touched = set()
        return {('buy', k) if k > 0 else ('sell', -k) for k in touched}

    def open_order(self, order_id: int) -> OpenOrder | None:
        """The resting order ``order_id``, or None (not resting)."""
        order = self._orders.get(order_id)
        if order is None:
            return None
        key = order[_KEY]
        return OpenOrder(order[_ORDER_ID], order[_ACCOUNT_ID],
                         'buy' if key > 0 else 'sell', abs(key), order[_REMAINING])

    def open_orders(self):
        """All resting orders in priority order: bids best first, then asks."""
        out = []
        for keys, levels, side in ((self._bid_keys, self._bid_levels, 'buy'),
                                   (self._ask_keys, self._ask_levels, 'sell')):
            for key in reversed(keys):
                for order in levels[key].orders:
                    if order[_REMAINING]:
                        out.append(OpenOrder(order[_ORDER_ID], order[_ACCOUNT_ID],
                                             side, abs(key), order[_REMAINING]))
        return out

    def stop_order(self, order_id: int) -> NewOrder | None:
        """The waiting (untriggered) stop ``order_id``, or None."""
        waiting = self._stops.get(order_id)
        return waiting[1] if waiting is not None else None

    def stop_orders(self) -> list[NewOrder]:
        """All waiting stops in acceptance order."""
        return [command for _, command in sorted(self._stops.values())]

    def __len__(self) -> int:
        """Number of resting orders (waiting stops not included)."""
        return len(self._orders)

    def validate_internal_state(self) -> None:
        """Raise AssertionError naming the first broken invariant of the book.

        Walks every structure, so it is for tests (after every step), not for
        the hot path.  The invariants are the ones the matching code relies on.
        """
        def check(holds, invariant):
            if not holds:
                raise AssertionError(f'{self.pair}: {invariant}')

        indexed = self._orders
        seen = set()
        for name, is_buy, levels, keys in (('bid', True, self._bid_levels, self._bid_keys),
                                           ('ask', False, self._ask_levels, self._ask_keys)):
            check(all(a < b for a, b in zip(keys, keys[1:])),
                  f'{name} level keys are not strictly ascending: {keys}')
            check(all((key > 0) == is_buy for key in keys),
                  f'{name} level keys have the wrong sign: {keys}')
            check(set(keys) == {key for key, level in levels.items() if level.total},
                  f'{name} level keys are not exactly the levels holding size')
            for key, level in levels.items():
                price = abs(key)
                live = [order for order in level.orders if order[_REMAINING]]
                check(level.total == sum(order[_REMAINING] for order in live),
                      f'{name} level {price}: size {level.total} is not the sum of its '
                      f'orders\' remaining {sum(order[_REMAINING] for order in live)}')
                check(level.dead == len(level.orders) - len(live),
                      f'{name} level {price}: {level.dead} counted cancelled, '
                      f'{len(level.orders) - len(live)} queued')
                check(level.total or not level.orders,
                      f'{name} level {price} is empty but still queues orders')
                for order in live:
                    check(order[_KEY] == key,
                          f'order {order[_ORDER_ID]} queued at {name} level {price} has key {order[_KEY]}')
                    check(order[_ORDER_ID] not in seen, f'order {order[_ORDER_ID]} queued twice')
                    check(indexed.get(order[_ORDER_ID]) is order,
                          f'resting order {order[_ORDER_ID]} is not indexed')
                    seen.add(order[_ORDER_ID])
        check(len(seen) == len(indexed),
              f'indexed orders not on the book: {sorted(set(indexed) - seen)}')
        bids, asks = self._bid_keys, self._ask_keys
        check(not bids or not asks or bids[-1] < -asks[-1],
              f'book is crossed: bid {self.best_bid()} >= ask {self.best_ask()}')

        check(self._range is None, 'traded range left unchecked against the stops')
        heaps = {(True, entry) for entry in self._above_stops}
        heaps.update((False, entry) for entry in self._below_stops)
        sequences = set()
        for order_id, (seq, command) in self._stops.items():
            above = self._fires_above(command, command.side == _BUY)
            check(command.order_id == order_id and command.type == _STOP,
                  f'waiting stop {order_id} is filed as {command!r}')
            check(order_id not in indexed, f'order {order_id} both rests and waits as a stop')
            check(seq not in sequences and 0 < seq <= self._stop_seq,
                  f'waiting stop {order_id} has a bad sequence number {seq}')
            sequences.add(seq)
            stop_price = command.stop_price or 0     # an accepted stop has one (_check_stop)
            trigger = stop_price if above else -stop_price
            check((above, (trigger, seq, order_id)) in heaps,
                  f'waiting stop {order_id} is missing from its trigger heap')
        for heap in (self._above_stops, self._below_stops):
            check(all(heap[(i - 1) // 2] <= heap[i] for i in range(1, len(heap))),
                  'a stop trigger heap is out of order')

    # ------------------------------------------------------------------
    # Recovery
    # ------------------------------------------------------------------

    def load_resting(self, order_id: int, account_id: int, side: str,
                     price: int, remaining: int) -> None:
        """Re-add a resting order at the back of its level, without matching.

        Call in original time priority.  Raises ValueError for a duplicate id,
        a non-positive price/size, or an order that would cross the book.
        (A resting order needs no STP mode: only the incoming order's counts.)
        """
        if side not in _SIDES:
            raise ValueError(f'side must be buy or sell, not {side!r}')
        is_buy = side == _BUY
        opposite = self.best_ask() if is_buy else self.best_bid()
        if opposite is not None and (price >= opposite if is_buy else price <= opposite):
            raise ValueError(f'order {order_id} would cross the book')
        self._load(order_id, account_id, is_buy, price, remaining)

    def load_resting_many(self, rows: list[tuple]) -> None:
        """Re-add resting orders, each row beginning (order_id, account_id,
        is_buy, price, remaining) (later items are ignored), at the back of
        their levels in the order given, without matching.

        Call in original time priority.  Raises ValueError as load_resting
        does, the book then partly loaded (discard it).  Whether the book
        crosses is checked once, after the last row: the best bid only rises
        and the best ask only falls as orders are added, so a row that crossed
        when added leaves the book crossed.
        """
        for row in rows:
            order_id: int = row[0]
            account_id: int = row[1]
            is_buy: bool = row[2]
            price: int = row[3]
            remaining: int = row[4]
            self._load(order_id, account_id, is_buy, price, remaining)
        bid, ask = self.best_bid(), self.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            raise ValueError(f'the loaded orders cross the book (bid {bid}, ask {ask})')

    def _load(self, order_id: int, account_id: int, is_buy: bool, price: int, remaining: int) -> None:
        if price <= 0 or remaining <= 0:
            raise ValueError('price and remaining must be positive')
        if order_id in self._orders or order_id in self._stops:
            raise ValueError(f'order {order_id} is already on the book')
        self._rest(is_buy, [order_id, account_id, remaining, price if is_buy else -price])

    def _rest(self, is_buy: bool, order: list) -> None:
        """Append a resting order at the back of its level."""
        key = order[_KEY]
        levels = self._bid_levels if is_buy else self._ask_levels
        level = levels.get(key)
        if level is None or not level.total:
            level = self._open_level(is_buy, key)
        level.orders.append(order)
        level.total += order[_REMAINING]
        self._orders[order[_ORDER_ID]] = order

    def load_stop(self, command: NewOrder) -> None:
        """Re-add a waiting stop without triggering (call in acceptance order)."""
        if command.__class__ is not NewOrder or command.type != _STOP:
            raise ValueError('load_stop takes a NewOrder of type stop')
        if command.side not in _SIDES:
            raise ValueError(f'side must be buy or sell, not {command.side!r}')
        if command.time_in_force not in _TIME_IN_FORCE or command.stp not in _STP_MODES:
            raise ValueError('bad time_in_force or stp')
        if command.order_id in self._orders or command.order_id in self._stops:
            raise ValueError(f'order {command.order_id} is already on the book')
        is_buy = command.side == _BUY
        self._check_stop(command, is_buy)
        self._add_stop(command, self._fires_above(command, is_buy))
