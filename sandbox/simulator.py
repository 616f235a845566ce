"""The simulated traders' I/O: reads what each trader sees and sends what sandbox.simulation decides,
as signed REST requests through hkt_client, the path every bot takes.

Each action waits for the matcher's answer (polling an order the server answered `pending`) before the
next is decided, so the state every decision reads follows from the actions before it alone. Requests
are paced by each trader's tier budget and by the public budget for the book; a 429 waits for its
Retry-After. No Django here: the management command sets the accounts up and hands over their keys.
"""

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

import httpx
from hkt_client import Client
from hkt_client import errors as api

from sandbox.simulation import Cancel, Event, OwnOrder, Place, Simulation, View

log = logging.getLogger("sandbox.simulator")

BOOK_DEPTH = 50
BUDGET_SHARE = 0.8  # of each budget: room for a person using the same key or address meanwhile
ANSWER_POLL_SECONDS = 0.05
ANSWER_TIMEOUT_SECONDS = 60
WEIGHTS = {"orders": 5, "balances": 2, "cancel_all": 10}  # the README's endpoint weights; 1 otherwise
# Refusals a decision may meet and the market lives with (the order, if any, exists and is closed).
SKIPPED = (api.InsufficientFunds, api.PostOnlyWouldTake, api.MarketHalted, api.InvalidRequest,
           api.OrderAlreadyClosed, api.OrderNotFound)


class Stopped(Exception):
    """The run was asked to stop while it waited."""


class Budget:
    """A sliding window of request weight, kept under a share of the server's limit for it."""

    def __init__(self, weight_per_window: int, window_seconds: float, stopping: threading.Event):
        self.limit = max(1, int(weight_per_window * BUDGET_SHARE))
        self.window, self.stopping = window_seconds, stopping
        self.spent: deque[tuple[float, int]] = deque()

    def spend(self, weight: int) -> None:
        while True:
            now = time.monotonic()
            while self.spent and self.spent[0][0] <= now - self.window:
                self.spent.popleft()
            if sum(w for _, w in self.spent) + weight <= self.limit:
                self.spent.append((now, weight))
                return
            if self.stopping.wait(self.spent[0][0] + self.window - now):
                raise Stopped


@dataclass
class Trader:
    name: str
    client: Client
    budget: Budget


class Simulator:
    def __init__(self, simulation: Simulation, base_url: str, credentials: dict[str, tuple[str, str, int]], *,
                 public_weight_per_window: int, window_seconds: float, max_actions: int | None = None):
        """``credentials``: each trader's key, secret and tier budget (weight per window)."""
        self.simulation, self.max_actions = simulation, max_actions
        self.stopping = threading.Event()
        self.orders_cancelled = False  # by the clean stop, once run() has ended
        self.http = httpx.Client(timeout=10)
        self.public = Client(base_url, http=self.http)
        self.public_budget = Budget(public_weight_per_window, window_seconds, self.stopping)
        self.traders = {name: Trader(name, Client(base_url, key, secret, http=self.http, max_retries=5),
                                     Budget(weight, window_seconds, self.stopping))
                        for name, (key, secret, weight) in credentials.items()}
        self.actions = self.events = 0

    def stop(self) -> None:
        """From a signal handler or another thread: the run ends after the request at hand."""
        self.stopping.set()

    def run(self) -> int:
        """Trade until stopped (or max_actions were sent); then cancel every open order. Returns the actions sent."""
        try:
            self.wait_for_server()
            self.cancel_everything()  # what a run killed without its clean stop left behind
            started = time.monotonic()
            while not self.stopping.is_set() and not self.done():
                event = self.simulation.next_event()
                if self.stopping.wait(max(0.0, started + event.at - time.monotonic())):
                    break
                self.act(event)
        except Stopped:
            pass
        finally:
            self.stopping.clear()  # the clean stop's own requests must not be cut short; a second signal does
            try:
                self.cancel_everything()
                self.orders_cancelled = True
            except Stopped:
                log.warning("stopped again while cancelling: some simulated orders may be left open")
            finally:
                self.http.close()
        return self.actions

    def done(self) -> bool:
        return self.max_actions is not None and self.actions >= self.max_actions

    def act(self, event: Event) -> None:
        self.events += 1
        book = self.book(event.pair)
        event = self.simulation.first_things_first(event, book)
        view = self.view(event, book)
        for action in self.simulation.decide(event, view):
            if self.stopping.is_set() or self.done():
                return
            self.send(action)
            self.actions += 1
        if self.actions and self.actions % 500 == 0:
            log.info("%d orders and cancels sent, %d events", self.actions, self.events)

    # Reading.

    def book(self, pair: str) -> View:
        self.public_budget.spend(1)
        book = self.call(self.public.orderbook, pair, depth=BOOK_DEPTH)
        return View(bids=levels(book["bids"]), asks=levels(book["asks"]))

    def view(self, event: Event, book: View) -> View:
        trader, spec = self.traders[event.trader], self.simulation.specs[event.pair]
        trader.budget.spend(WEIGHTS["orders"])
        page = self.call(trader.client.list_orders, pair=event.pair, status="live", limit=1000)
        orders = tuple(sorted((own_order(order) for order in page["results"]), key=lambda order: order.order_id))
        trader.budget.spend(WEIGHTS["balances"])
        balances = self.call(trader.client.balances)["balances"]
        base = next((row["spot"]["total"] for row in balances if row["asset"] == spec.base), "0")
        return View(bids=book.bids, asks=book.asks, orders=orders, base_total=Decimal(base))

    # Acting.

    def send(self, action: Place | Cancel) -> None:
        trader = self.traders[action.trader]
        trader.budget.spend(1)
        try:
            if isinstance(action, Place):
                # One client_order_id for every attempt: a retry returns the first order, never a second.
                order = self.call(trader.client.place_order, **action.order_fields(), client_order_id=uuid.uuid4().hex)
            else:
                order = self.call(trader.client.cancel_order, action.order_id)
        except SKIPPED as refusal:
            # Expected now and then (a quote the book moved into, funds spent); a malformed order is a bug.
            log.log(logging.WARNING if isinstance(refusal, api.InvalidRequest) else logging.DEBUG,
                    "%s refused: %s", action, refusal)
            return
        self.wait_for_answer(trader, order)

    def wait_for_answer(self, trader: Trader, order: dict) -> None:
        """Until the matcher has processed the order (or its cancel), or ANSWER_TIMEOUT_SECONDS: a market
        halted before its matcher took the order (or that matcher down) leaves it pending, and the simulation
        goes on (the next view reads the order as it is then)."""
        deadline = time.monotonic() + ANSWER_TIMEOUT_SECONDS
        while order["status"] == "pending" or (order.get("cancel_requested") and order["status"] in LIVE):
            if time.monotonic() > deadline:
                log.warning("order %s still %s after %ss: going on", order["order_id"], order["status"],
                            ANSWER_TIMEOUT_SECONDS)
                return
            time.sleep(ANSWER_POLL_SECONDS)
            trader.budget.spend(1)
            order = self.call(trader.client.get_order, order["order_id"])

    def cancel_everything(self) -> None:
        for trader in self.traders.values():
            trader.budget.spend(WEIGHTS["cancel_all"])
            for order in self.call(trader.client.cancel_all)["orders"]:
                self.wait_for_answer(trader, order)

    # Transport.

    def call(self, method, *args, **kwargs):
        """One request; a 429 (after the client's own retries) waits for its Retry-After, an outage or a server
        not up yet is retried every second, until the run is stopped."""
        while True:
            try:
                return method(*args, **kwargs)
            except api.RateLimited as refusal:
                wait = refusal.retry_after or 1.0
            except (api.ServiceUnavailable, httpx.TransportError) as failure:
                log.warning("%s; retrying", failure)
                wait = 1.0
            if self.stopping.wait(wait):
                raise Stopped

    def wait_for_server(self) -> None:
        self.public_budget.spend(1)
        self.call(self.public.time)


LIVE = {"pending", "untriggered", "open", "partially_filled"}


def levels(rows: list[list[str]]) -> tuple[tuple[Decimal, Decimal], ...]:
    return tuple((Decimal(price), Decimal(size)) for price, size in rows)


def own_order(order: dict) -> OwnOrder:
    def amount(name: str) -> Decimal | None:
        return None if order.get(name) is None else Decimal(order[name])

    return OwnOrder(order["order_id"], order["side"], order["type"], amount("price"),
                    remaining=amount("remaining_size") or Decimal(0), stop_price=amount("stop_price"))
