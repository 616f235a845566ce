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
time_in_force='GTC', post_only=False, stp='cancel_oldest')`` and
``CancelOrder(order_id)``.  ``apply`` raises ``ValueError`` (with no side
effect) for a structurally impossible command: unknown side/type/TIF/STP
mode, a limit without price or size, a market with neither or both of size
and funds, funds on a sell or on a limit, ``post_only`` on a market order,
FOK with funds, a non-positive number, or an order id the book already holds.

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
* Stops: a buy stop triggers when a trade prints at >= stop_price, a sell
  stop when a trade prints at <= stop_price (every trade counts, not only
  the last one of a sweep).  If ``last_trade_price`` already satisfies the
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
recovery); ``drain_touched_levels()`` -> set of (side, price) whose
aggregate changed since the previous drain; ``open_order(id)`` ->
``OpenOrder(order_id, account_id, side, price, remaining)`` or None;
``open_orders()``; ``stop_order(id)`` -> the waiting ``NewOrder`` or None;
``stop_orders()``; ``len(book)`` = number of resting orders.

Recovery
--------
``load_resting(order_id, account_id, side, price, remaining,
stp='cancel_oldest')`` appends a resting order at the back of its level
(call it in original time priority; raises ValueError if it would cross)
and ``load_stop(NewOrder)`` re-adds a waiting stop (call it in original
acceptance order).  Neither matches, triggers, emits events or marks
touched levels.

Implementation notes (why it is fast)
-------------------------------------
Each side is a dict level-key -> ``_Level`` (a deque of orders + the live
aggregate) and a sorted list of the keys of non-empty levels.  Keys are
+price for bids and -price for asks, so on both sides the best level is the
LAST key (``keys[-1]``, ``keys.pop()``) and one matching loop serves both
sides.  Cancels are lazy (O(1)); emptied levels are kept for reuse.  Waiting
stops sit in two heaps keyed by stop price, with lazy deletion.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from heapq import heapify, heappop, heappush
from typing import NamedTuple

__all__ = [
    'NewOrder', 'CancelOrder', 'OrderBook', 'OpenOrder',
    'Rested', 'Trade', 'Filled', 'Cancelled', 'Expired', 'Rejected',
    'Untriggered', 'Triggered', 'CancelRejected',
    'POST_ONLY_WOULD_TAKE',
]

POST_ONLY_WOULD_TAKE = 'POST_ONLY_WOULD_TAKE'


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

class NewOrder(NamedTuple):
    order_id: int
    account_id: int
    side: str                    # 'buy' | 'sell'
    type: str                    # 'limit' | 'market' | 'stop'
    price: int | None = None
    size: int | None = None
    funds: int | None = None
    stop_price: int | None = None
    time_in_force: str = 'GTC'   # 'GTC' | 'IOC' | 'FOK'
    post_only: bool = False
    stp: str = 'cancel_oldest'   # 'cancel_oldest' | 'cancel_newest' | 'cancel_both'


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

_SIDES = ('buy', 'sell')
_TIFS = frozenset(('GTC', 'IOC', 'FOK'))
_STPS = frozenset(('cancel_oldest', 'cancel_newest', 'cancel_both'))
# Crossing threshold of a market order: below every level key (keys are +/- prices in ticks; an
# integer keeps the engine all-integer, and no price on a sane grid comes near it).
_NO_LIMIT = -(10 ** 60)
# tuple.__new__ builds a NamedTuple without going through its Python-level
# __new__; about twice as fast, which matters for Trade/Filled/Rested.
_new = tuple.__new__


# A resting order is a small list, [order_id, account_id, remaining, key, stp]
# (indexes below), not an object: building a list is ~4x cheaper than a
# slotted instance and one is built for every order that rests.
#   key: +price for a bid, -price for an ask, so both sides sort with the
#        best level LAST and the sign tells the side;
#   remaining == 0 marks an order cancelled lazily while still queued.
_ID, _ACCOUNT, _REMAINING, _KEY, _STP = range(5)


class _Level:
    """FIFO queue of one price level plus its live aggregate size.

    Cancels are lazy (O(1)): the order is zeroed and left in the deque, and
    skipped when it reaches the front; ``dead`` counts such entries so the
    deque can be compacted when they pile up behind long-lived orders.
    """
    __slots__ = ('orders', 'total', 'dead')

    def __init__(self):
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
        self._buy_stops: list[tuple[int, int, int]] = []    # (stop_price, ...)
        self._sell_stops: list[tuple[int, int, int]] = []   # (-stop_price, ...)
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

    def _new_order(self, command, events):
        """Validate a NewOrder, then match it / rest it / park it (stop).

        Everything is validated before the first change, so a ValueError
        leaves the book untouched.  The limit and size-market path is inlined
        here because it is the hot path.
        """
        (order_id, account_id, side, type_, price, size, funds,
         stop_price, tif, post_only, stp) = command
        if side == 'buy':
            is_buy = True
        elif side == 'sell':
            is_buy = False
        else:
            _bad(f'side must be buy or sell, not {side!r}')
        # (Checking the usual value first skips the set lookup.)
        if ((tif != 'GTC' and tif not in _TIFS)
                or (stp != 'cancel_oldest' and stp not in _STPS)):
            _bad(f'bad time_in_force {tif!r} or stp {stp!r}')
        if order_id in self._orders or (self._stops and order_id in self._stops):
            _bad(f'order {order_id} is already on the book')
        if type_ == 'limit':
            if (price is None or size is None or funds is not None
                    or stop_price is not None or price <= 0 or size <= 0):
                _bad('a limit order needs a positive price and size only')
        elif type_ == 'market':
            self._check_market(is_buy, price, size, funds, stop_price,
                               tif, post_only)
            if funds is not None:
                self._execute_funds(order_id, account_id, funds, stp, events)
                return
        elif type_ == 'stop':
            self._accept_stop(command, is_buy, events)
            return
        else:
            _bad(f'bad order type {type_!r}')

        # A limit (price) or a market order by size (price None).
        if is_buy:
            opp_levels = self._ask_levels
            opp_keys = self._ask_keys
            threshold = _NO_LIMIT if price is None else -price
        else:
            opp_levels = self._bid_levels
            opp_keys = self._bid_keys
            threshold = _NO_LIMIT if price is None else price
        append = events.append
        remaining = size

        if opp_keys and opp_keys[-1] >= threshold:
            # The order crosses: it will take liquidity.
            if post_only:
                append(_new(Rejected, (order_id, POST_ONLY_WOULD_TAKE)))
                return
            if tif == 'FOK' and not self._fok_fillable(
                    opp_levels, opp_keys, threshold, account_id, size, stp):
                append(_new(Expired, (order_id, size)))
                return
            index = self._orders
            touched = self._touched
            last_price = None       # price of the latest trade, if any
            first_price = None      # price of the first trade
            taker_stopped = False   # STP cancelled the incoming order
            while remaining and opp_keys:
                key = opp_keys[-1]
                if key < threshold:
                    break
                level = opp_levels[key]
                orders = level.orders
                trade_price = -key if is_buy else key
                if last_price is None:
                    first_price = trade_price
                before = level.total
                while orders:
                    maker = orders[0]
                    maker_id, maker_account, maker_remaining = maker[0], maker[1], maker[2]
                    if not maker_remaining:             # lazily cancelled
                        orders.popleft()
                        level.dead -= 1
                        continue
                    if maker_account == account_id:
                        # Self-trade prevention, decided by the taker's mode.
                        if stp != 'cancel_newest':
                            orders.popleft()
                            del index[maker_id]
                            maker[_REMAINING] = 0
                            level.total -= maker_remaining
                            append(_new(Cancelled, (maker_id, maker_remaining,
                                                    'self_trade')))
                        if stp != 'cancel_oldest':
                            taker_stopped = True
                            break
                        continue
                    if maker_remaining <= remaining:
                        # The maker is used up.
                        orders.popleft()
                        del index[maker_id]
                        level.total -= maker_remaining
                        remaining -= maker_remaining
                        last_price = trade_price
                        append(_new(Trade, (maker_id, order_id, maker_account,
                                            account_id, side, trade_price,
                                            maker_remaining)))
                        append(_new(Filled, (maker_id,)))
                        if not remaining:
                            break
                    else:
                        # The taker is used up; the maker keeps its place.
                        maker[_REMAINING] = maker_remaining - remaining
                        level.total -= remaining
                        last_price = trade_price
                        append(_new(Trade, (maker_id, order_id, maker_account,
                                            account_id, side, trade_price,
                                            remaining)))
                        remaining = 0
                        break
                if level.total != before:
                    touched.add(key)
                if not level.total:
                    # Level emptied: off the sorted keys, kept for reuse.
                    opp_keys.pop()
                    if orders:
                        orders.clear()          # zeroed leftovers
                        level.dead = 0
                if taker_stopped:
                    break
            if last_price is not None:
                self.last_trade_price = last_price
                if self._stops:
                    self._note_trades(first_price, last_price)
            if taker_stopped:
                # Only ever set while something remained to fill.
                append(_new(Cancelled, (order_id, remaining, 'self_trade')))
                return

        if not remaining:
            append(_new(Filled, (order_id,)))
        elif price is None or tif != 'GTC':
            append(_new(Expired, (order_id, remaining)))
        else:
            # Rest at the back of the level (the most common outcome).
            key = price if is_buy else -price
            self._rest(is_buy, key, [order_id, account_id, remaining, key, stp])
            self._touched.add(key)
            append(_new(Rested, (order_id, side, price, remaining)))

    def _open_level(self, is_buy, key):
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

    def _fok_fillable(self, opp_levels, opp_keys, threshold, account_id, size,
                      stp) -> bool:
        """Could ``size`` fill right now, not counting own orders?"""
        available = 0
        for i in range(len(opp_keys) - 1, -1, -1):
            key = opp_keys[i]
            if key < threshold:
                return False
            for maker in opp_levels[key].orders:
                if not maker[_REMAINING]:
                    continue
                if maker[_ACCOUNT] == account_id:
                    if stp == 'cancel_oldest':
                        continue
                    return False          # STP would stop the order here
                available += maker[_REMAINING]
                if available >= size:
                    return True
        return False

    def _execute_funds(self, order_id, account_id, funds, stp, events):
        """Market buy spending ``funds`` (notional) on whole lots."""
        append = events.append
        opp_levels = self._ask_levels
        opp_keys = self._ask_keys
        index = self._orders
        touched = self._touched
        funds_left = funds
        first_price = last_price = None
        taker_stopped = False
        while opp_keys:
            key = opp_keys[-1]
            trade_price = -key
            if funds_left < trade_price:
                break                      # cannot afford one more lot
            level = opp_levels[key]
            orders = level.orders
            if last_price is None:
                first_price = trade_price
            before = level.total
            while orders:
                maker = orders[0]
                maker_id, maker_account, maker_remaining = maker[0], maker[1], maker[2]
                if not maker_remaining:
                    orders.popleft()
                    level.dead -= 1
                    continue
                lots = funds_left // trade_price
                if not lots:
                    break                  # spent: do not touch own orders
                if maker_account == account_id:
                    if stp != 'cancel_newest':
                        orders.popleft()
                        del index[maker_id]
                        maker[_REMAINING] = 0
                        level.total -= maker_remaining
                        append(_new(Cancelled, (maker_id, maker_remaining,
                                                'self_trade')))
                    if stp != 'cancel_oldest':
                        taker_stopped = True
                        break
                    continue
                last_price = trade_price
                if maker_remaining <= lots:
                    orders.popleft()
                    del index[maker_id]
                    level.total -= maker_remaining
                    funds_left -= maker_remaining * trade_price
                    append(_new(Trade, (maker_id, order_id, maker_account,
                                        account_id, 'buy', trade_price, maker_remaining)))
                    append(_new(Filled, (maker_id,)))
                else:
                    maker[_REMAINING] = maker_remaining - lots
                    level.total -= lots
                    funds_left -= lots * trade_price
                    append(_new(Trade, (maker_id, order_id, maker_account,
                                        account_id, 'buy', trade_price, lots)))
                    break
            if level.total != before:
                touched.add(key)
            if not level.total:
                opp_keys.pop()
                if orders:
                    orders.clear()
                    level.dead = 0
            if taker_stopped or funds_left < trade_price:
                break
        if last_price is not None:
            self.last_trade_price = last_price
            if self._stops:
                self._note_trades(first_price, last_price)
        if not funds_left:
            append(_new(Filled, (order_id,)))
        elif taker_stopped:
            append(_new(Cancelled, (order_id, funds_left, 'self_trade')))
        else:
            append(_new(Expired, (order_id, funds_left)))

    @staticmethod
    def _check_market(is_buy, price, size, funds, stop_price, tif, post_only):
        if price is not None or stop_price is not None:
            _bad('a market order has no price or stop_price')
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
            if tif == 'FOK':
                _bad('FOK is not supported with funds')

    # ------------------------------------------------------------------
    # Cancels
    # ------------------------------------------------------------------

    def _cancel(self, order_id, events):
        order = self._orders.pop(order_id, None)
        if order is None:
            waiting = self._stops.pop(order_id, None)
            if waiting is None:
                events.append(_new(CancelRejected, (order_id, 'not_found')))
                return
            stop = waiting[1]
            remaining = stop.size if stop.size is not None else stop.funds
            events.append(_new(Cancelled, (order_id, remaining, 'user')))
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
        events.append(_new(Cancelled, (order_id, remaining, 'user')))

    # ------------------------------------------------------------------
    # Stops
    # ------------------------------------------------------------------

    @staticmethod
    def _check_stop(command, is_buy):
        if command.stop_price is None or command.stop_price <= 0:
            _bad('a stop order needs a positive stop_price')
        price, size, funds = command.price, command.size, command.funds
        if price is not None:
            if size is None or funds is not None:
                _bad('a stop-limit order needs size, not funds')
            if price <= 0 or size <= 0:
                _bad('price and size must be positive')
        else:
            OrderBook._check_market(is_buy, None, size, funds, None,
                                    command.time_in_force, command.post_only)

    def _accept_stop(self, command, is_buy, events):
        self._check_stop(command, is_buy)
        last = self.last_trade_price
        if last is not None and (last >= command.stop_price if is_buy
                                 else last <= command.stop_price):
            events.append(_new(Triggered, (command.order_id,)))
            self._enter_triggered(command, events)
            return
        self._add_stop(command, is_buy)
        events.append(_new(Untriggered, (command.order_id,)))

    def _add_stop(self, command, is_buy):
        self._stop_seq += 1
        seq = self._stop_seq
        self._stops[command.order_id] = (seq, command)
        if is_buy:
            heappush(self._buy_stops, (command.stop_price, seq, command.order_id))
        else:
            heappush(self._sell_stops, (-command.stop_price, seq, command.order_id))

    def _enter_triggered(self, command, events):
        """Run a triggered stop as the limit or market order it becomes."""
        self._new_order(command._replace(
            type='limit' if command.price is not None else 'market',
            stop_price=None), events)

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
        heap = self._buy_stops
        while heap and heap[0][0] <= high:          # buy: a trade >= stop
            _, seq, order_id = heappop(heap)
            waiting = stops.get(order_id)
            if waiting is not None and waiting[0] == seq:
                del stops[order_id]
                fired.append(waiting)
        heap = self._sell_stops
        while heap and -heap[0][0] >= low:          # sell: a trade <= stop
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
            events.append(_new(Triggered, (command.order_id,)))
            self._enter_triggered(command, events)

    def _maybe_compact_stops(self):
        # Cancelled stops stay in the heaps until popped; rebuild the heaps
        # when stale entries dominate so memory stays proportional.
        stale = len(self._buy_stops) + len(self._sell_stops) - len(self._stops)
        if stale > 64 and stale > len(self._stops):
            live = self._stops
            self._buy_stops = [e for e in self._buy_stops
                               if live.get(e[2], (None,))[0] == e[1]]
            self._sell_stops = [e for e in self._sell_stops
                                if live.get(e[2], (None,))[0] == e[1]]
            heapify(self._buy_stops)
            heapify(self._sell_stops)

    # ------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------

    def best_bid(self) -> int | None:
        keys = self._bid_keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self._ask_keys
        return -keys[-1] if keys else None

    def level_size(self, side: str, price: int) -> int:
        if side == 'buy':
            level = self._bid_levels.get(price)
        elif side == 'sell':
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
        return OpenOrder(order[_ID], order[_ACCOUNT],
                         'buy' if key > 0 else 'sell', abs(key), order[_REMAINING])

    def open_orders(self):
        """All resting orders in priority order: bids best first, then asks."""
        out = []
        for keys, levels, side in ((self._bid_keys, self._bid_levels, 'buy'),
                                   (self._ask_keys, self._ask_levels, 'sell')):
            for key in reversed(keys):
                for order in levels[key].orders:
                    if order[_REMAINING]:
                        out.append(OpenOrder(order[_ID], order[_ACCOUNT],
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

    # ------------------------------------------------------------------
    # Recovery
    # ------------------------------------------------------------------

    def load_resting(self, order_id: int, account_id: int, side: str,
                     price: int, remaining: int,
                     stp: str = 'cancel_oldest') -> None:
        """Re-add a resting order at the back of its level, without matching.

        Call in original time priority.  Raises ValueError for a duplicate id,
        a non-positive price/size, or an order that would cross the book.
        """
        if side not in _SIDES:
            raise ValueError(f'side must be buy or sell, not {side!r}')
        if stp not in _STPS:
            raise ValueError(f'bad stp {stp!r}')
        if price <= 0 or remaining <= 0:
            raise ValueError('price and remaining must be positive')
        if order_id in self._orders or order_id in self._stops:
            raise ValueError(f'order {order_id} is already on the book')
        is_buy = side == 'buy'
        opposite = self.best_ask() if is_buy else self.best_bid()
        if opposite is not None and (price >= opposite if is_buy else price <= opposite):
            raise ValueError(f'order {order_id} would cross the book')
        key = price if is_buy else -price
        self._rest(is_buy, key, [order_id, account_id, remaining, key, stp])

    def _rest(self, is_buy: bool, key: int, order: list) -> None:
        """Append a resting order ``[order_id, account_id, remaining, key, stp]`` at the back of its level."""
        levels = self._bid_levels if is_buy else self._ask_levels
        level = levels.get(key)
        if level is None or not level.total:
            level = self._open_level(is_buy, key)
        level.orders.append(order)
        level.total += order[2]
        self._orders[order[0]] = order

    def load_stop(self, command: NewOrder) -> None:
        """Re-add a waiting stop without triggering (call in acceptance order)."""
        if command.__class__ is not NewOrder or command.type != 'stop':
            raise ValueError('load_stop takes a NewOrder of type stop')
        if command.side not in _SIDES:
            raise ValueError(f'side must be buy or sell, not {command.side!r}')
        if command.time_in_force not in _TIFS or command.stp not in _STPS:
            raise ValueError('bad time_in_force or stp')
        if command.order_id in self._orders or command.order_id in self._stops:
            raise ValueError(f'order {command.order_id} is already on the book')
        is_buy = command.side == 'buy'
        self._check_stop(command, is_buy)
        self._add_stop(command, is_buy)
