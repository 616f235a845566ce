"""A small, obviously-correct model of the matching rules, for property tests.

Written independently of trading.engine and for clarity, not speed: every
resting order sits in ONE plain list in arrival order, and each matching
step scans that whole list for the best opposite order, sorting by
(price, arrival).  The rules it implements are the ones in the engine's
module docstring; it returns the same event types so streams can be
compared event for event.
"""

from __future__ import annotations

from dataclasses import dataclass

from trading.engine import (
    CancelOrder, CancelRejected, Cancelled, Expired, Filled, NewOrder, Rejected,
    Rested, Trade, Triggered, Untriggered,
)


@dataclass
class RestingOrder:
    order_id: int
    account_id: int
    side: str
    price: int
    remaining: int
    arrival: int


class ReferenceBook:
    def __init__(self) -> None:
        self.resting: list[RestingOrder] = []       # arrival order
        self.waiting_stops: list[NewOrder] = []     # acceptance order
        self.last_trade_price: int | None = None
        self.touched: set[tuple[str, int]] = set()
        self.arrivals = 0
        self.prices_since_check: list[int] = []

    # -- queries ---------------------------------------------------------

    def depth(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        totals: dict[tuple[str, int], int] = {}
        for o in self.resting:
            totals[(o.side, o.price)] = totals.get((o.side, o.price), 0) + o.remaining
        bids = sorted(((p, q) for (s, p), q in totals.items() if s == 'buy'), reverse=True)
        asks = sorted((p, q) for (s, p), q in totals.items() if s == 'sell')
        return bids, asks

    # -- commands --------------------------------------------------------

    def apply(self, command) -> list:
        events: list = []
        self.prices_since_check = []
        if isinstance(command, CancelOrder):
            self.cancel(command.order_id, events)
        elif command.type == 'stop':
            self.accept_stop(command, events)
        else:
            self.execute(command, events)
        self.run_triggered_stops(events)
        return events

    def cancel(self, order_id: int, events: list) -> None:
        for o in self.resting:
            if o.order_id == order_id:
                self.resting.remove(o)
                self.touched.add((o.side, o.price))
                events.append(Cancelled(order_id, o.remaining, 'user'))
                return
        for stop in self.waiting_stops:
            if stop.order_id == order_id:
                self.waiting_stops.remove(stop)
                amount = stop.size if stop.size is not None else stop.funds
                events.append(Cancelled(order_id, amount, 'user'))
                return
        events.append(CancelRejected(order_id, 'not_found'))

    def accept_stop(self, stop: NewOrder, events: list) -> None:
        last = self.last_trade_price
        if last is not None and self.stop_condition(stop, [last]):
            events.append(Triggered(stop.order_id))
            self.execute(as_triggered(stop), events)
        else:
            self.waiting_stops.append(stop)
            events.append(Untriggered(stop.order_id))

    @staticmethod
    def stop_condition(stop: NewOrder, trade_prices: list[int]) -> bool:
        direction = stop.trigger or ('above' if stop.side == 'buy' else 'below')
        if direction == 'above':
            return any(p >= stop.stop_price for p in trade_prices)
        return any(p <= stop.stop_price for p in trade_prices)

    def run_triggered_stops(self, events: list) -> None:
        queue: list[NewOrder] = []
        while True:
            fired = [s for s in self.waiting_stops
                     if self.stop_condition(s, self.prices_since_check)]
            self.prices_since_check = []
            for stop in fired:
                self.waiting_stops.remove(stop)
            queue.extend(fired)
            if not queue:
                return
            stop = queue.pop(0)
            events.append(Triggered(stop.order_id))
            self.execute(as_triggered(stop), events)

    # -- matching --------------------------------------------------------

    def crosses(self, order: NewOrder, maker: RestingOrder) -> bool:
        if maker.side == order.side:
            return False
        if order.price is None:                     # market
            return True
        return maker.price <= order.price if order.side == 'buy' else maker.price >= order.price

    def makers_in_priority(self, order: NewOrder) -> list[RestingOrder]:
        makers = [o for o in self.resting if self.crosses(order, o)]
        if order.side == 'buy':
            return sorted(makers, key=lambda o: (o.price, o.arrival))
        return sorted(makers, key=lambda o: (-o.price, o.arrival))

    def fok_can_fill(self, order: NewOrder) -> bool:
        available = 0
        for maker in self.makers_in_priority(order):
            if maker.account_id == order.account_id:
                if order.stp == 'cancel_oldest':
                    continue
                return False
            available += maker.remaining
            if available >= order.size:
                return True
        return False

    def execute(self, order: NewOrder, events: list) -> None:
        by_funds = order.size is None
        left = order.funds if by_funds else order.size
        makers = self.makers_in_priority(order)
        if makers and order.post_only:
            events.append(Rejected(order.order_id, 'POST_ONLY_WOULD_TAKE'))
            return
        if makers and order.time_in_force == 'FOK' and not self.fok_can_fill(order):
            events.append(Expired(order.order_id, order.size))
            return
        self_trade_stop = False
        while left > 0:
            makers = self.makers_in_priority(order)
            if not makers:
                break
            maker = makers[0]
            if by_funds:
                affordable = left // maker.price
                if affordable == 0:
                    break
            if maker.account_id == order.account_id:
                if order.stp in ('cancel_oldest', 'cancel_both'):
                    self.resting.remove(maker)
                    self.touched.add((maker.side, maker.price))
                    events.append(Cancelled(maker.order_id, maker.remaining, 'self_trade'))
                if order.stp in ('cancel_newest', 'cancel_both'):
                    self_trade_stop = True
                    break
                continue
            quantity = min(maker.remaining, affordable if by_funds else left)
            maker.remaining -= quantity
            left -= quantity * maker.price if by_funds else quantity
            self.touched.add((maker.side, maker.price))
            self.last_trade_price = maker.price
            self.prices_since_check.append(maker.price)
            events.append(Trade(maker.order_id, order.order_id, maker.account_id,
                                order.account_id, order.side, maker.price, quantity))
            if maker.remaining == 0:
                self.resting.remove(maker)
                events.append(Filled(maker.order_id))
        if left == 0:
            events.append(Filled(order.order_id))
        elif self_trade_stop:
            events.append(Cancelled(order.order_id, left, 'self_trade'))
        elif order.type == 'market' or order.time_in_force != 'GTC':
            events.append(Expired(order.order_id, left))
        else:
            self.arrivals += 1
            self.resting.append(RestingOrder(order.order_id, order.account_id, order.side,
                                             order.price, left, self.arrivals))
            self.touched.add((order.side, order.price))
            events.append(Rested(order.order_id, order.side, order.price, left))


def as_triggered(stop: NewOrder) -> NewOrder:
    """The limit or market order a triggered stop becomes."""
    return stop._replace(type='limit' if stop.price is not None else 'market',
                         stop_price=None, trigger=None)
