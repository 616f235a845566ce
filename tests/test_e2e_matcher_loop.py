"""The matcher loop in its Celery worker (``trading.dispatch.serve``), killed with SIGKILL in the middle of a
backlog's drain: started again, and beside it a second worker for the same pair (a deploy's overlap), they
drain the rest; nothing is lost, nothing applied twice."""

import time

import psycopg
import pytest

from .processes import wait_until

pytestmark = pytest.mark.slow
PAIRS = 4000  # crossing pairs of orders: 8,000 commands, a drain of several batches

PLACE = """
from decimal import Decimal
from django.db import transaction
from accounts.models import Account
from trading import services
from trading.orders import OrderRequest
seller, buyer = Account.objects.get(pk={seller}), Account.objects.get(pk={buyer})
with transaction.atomic():  # one commit: no matcher runs yet, and it finds the queue when it starts
    for _ in range({pairs}):
        for account, side in ((seller, "sell"), (buyer, "buy")):
            services.place_order(account, OrderRequest(pair="BTC-USD", side=side, type="limit",
                                                       price=Decimal("63000"), size=Decimal("0.01")), wake=False)
"""


def counts(stack) -> tuple[int, int, set[str]]:
    """Queued commands, trades, and the statuses of the orders."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        queued, trades = conn.execute("SELECT (SELECT count(*) FROM trading_matchercommand), "
                                      "(SELECT count(*) FROM trading_trade)").fetchone()
        statuses = {row[0] for row in conn.execute("SELECT DISTINCT status FROM trading_order")}
    return queued, trades, statuses


def test_a_matcher_killed_mid_drain_leaves_the_rest_to_its_restart_and_a_second_writer(stack):
    seller = stack.create_trader("seller", "BTC=100")["account_id"]
    buyer = stack.create_trader("buyer", "USD=3000000")["account_id"]
    stack.manage("shell", "-c", PLACE.format(seller=seller, buyer=buyer, pairs=PAIRS))  # no matcher runs yet
    assert counts(stack) == (2 * PAIRS, 0, {"pending"})

    stack.start_matcher("BTC-USD")
    while counts(stack)[0] == 2 * PAIRS:  # until its first batch has committed
        time.sleep(0.01)
    stack.kill_matcher("BTC-USD")
    queued, trades, _ = counts(stack)
    assert 0 < queued < 2 * PAIRS and trades < PAIRS  # killed with a backlog left

    stack.start_matcher("BTC-USD")
    stack.start_matcher("BTC-USD")  # another worker for the pair, as in a deploy's overlap
    wait_until(lambda: counts(stack)[0] == 0, timeout=120)

    assert counts(stack) == (0, PAIRS, {"filled"})  # each command matched once
    assert stack.audit()["problems"] == []
