"""The simulated market on the production topology (PostgreSQL, Redis, Celery matchers, gunicorn): a short
seeded run keeps a two-sided book and trades, every one of its orders is an ordinary order with its hold
in the ledger, the audit passes, and a second run with the same seed from the same database decides the
same orders."""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .processes import wait_until

pytestmark = pytest.mark.slow
PAIRS = ["BTC-USD", "ETH-USD"]
SEED, ACTIONS, RATE = "7", "120", "20"

AFTER_THE_RUN = """
import io, json
from django.core.management import call_command
from trading.models import LedgerEntry, Order, Trade
orders = Order.objects.filter(account__user__username__startswith="sim-").order_by("id")
held = set(LedgerEntry.objects.filter(reason="order_hold", reference__startswith="order:")
           .values_list("reference", flat=True))
print(json.dumps({
    "orders": [[o.account.user.username, o.market.pair, o.side, o.type, str(o.price), str(o.size), str(o.stop_price)]
               for o in orders.select_related("account__user", "market")],
    "without_hold": [o.pk for o in orders if f"order:{o.pk}" not in held],
    "live": orders.filter(status__in=Order.LIVE_STATUSES).count(),
    "trades": Trade.objects.count(),
    "audit": json.loads((call_command("audit_ledger", stdout=(out := io.StringIO())), out.getvalue())[1]),
}))
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A migrated sandbox database with the demo markets, never served itself: each run gets a copy."""
    from .stack import Stack

    with Stack(tmp_path_factory.mktemp("simulation"), name="simulation", EXCHANGE_ENVIRONMENT="sandbox") as stack:
        yield stack


def two_sided(rest: str) -> dict[str, bool]:
    books = {pair: httpx.get(f"{rest}/v1/orderbook/{pair}", params={"depth": 1}).json() for pair in PAIRS}
    return {pair: bool(book["bids"]) and bool(book["asks"]) for pair, book in books.items()}


def simulate(sandbox, tag: str) -> dict:
    """One seeded run on a fresh copy of the sandbox database: what it left there, and the books seen meanwhile."""
    with sandbox.clone(tag) as stack:
        with ThreadPoolExecutor() as starting:  # each takes seconds to come up: side by side
            matchers = [starting.submit(stack.start_matcher, pair) for pair in PAIRS]
            rest = starting.submit(stack.start_rest, 2).result()
            [matcher.result() for matcher in matchers]
        process = stack.start(f"simulate-{tag}", [
            sys.executable, "manage.py", "simulate_market", "--base-url", rest, "--seed", SEED, "--rate", RATE,
            "--pairs", ",".join(PAIRS), "--actions", ACTIONS])
        wait_until(lambda: all(two_sided(rest).values()), timeout=30, what="a two-sided book in every pair")
        books = []
        while process.poll() is None:  # the book every quarter second, until the run stops itself
            books.append(two_sided(rest))
            time.sleep(0.25)
        log = stack.log(f"simulate-{tag}").read_text()
        assert process.returncode == 0, log
        result = json.loads(stack.manage("shell", "-c", AFTER_THE_RUN).strip().splitlines()[-1])
        return {**result, "books": books, "log": log}


def test_a_seeded_simulation_trades_through_the_normal_path_and_decides_the_same_orders_again(sandbox):
    first = simulate(sandbox, "a")

    assert f"Stopped after {ACTIONS} orders and cancels" in first["log"]
    for pair in PAIRS:  # the book stayed two-sided: an empty side lasts one event at most, till a maker fixes it
        sides = [book[pair] for book in first["books"]]
        assert sum(sides) >= 0.8 * len(sides), (pair, sides)
    assert first["trades"] > 10
    kinds = {(order[0].rsplit("-", 1)[0], order[3]) for order in first["orders"]}
    assert {("sim-maker", "limit"), ("sim-taker", "market")} <= kinds
    assert first["without_hold"] == []  # each one an Order, accepted with its hold journal `order:<id>`
    assert first["live"] == 0  # the clean stop cancelled what it left on the book
    assert first["audit"]["problems"] == [] and first["audit"]["pending_commands"] == 0

    again = simulate(sandbox, "b")

    assert again["orders"] == first["orders"]
    assert again["trades"] == first["trades"]
