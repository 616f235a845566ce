"""A single create and a batch of one account racing: they take an order's unique index entry and the
account's balance row in opposite orders, and PostgreSQL may end the deadlock by aborting one. The one
aborted wrote nothing, and is run again (trading.services.retrying_deadlocks) rather than answered 503."""

from decimal import Decimal

import pytest
from django.db import connection

from trading import markets
from trading.audit import audit
from trading.models import Market, Order

from .conftest import balance_of
from .racing import race

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: SQLite runs one write transaction at once"),
]
ROUNDS = 6


def single_and_batch(as_trader, account, body: dict) -> tuple:
    def send(kind):
        client = as_trader(account)
        if kind == "single":
            return client.post("/v1/orders", body, format="json")
        return client.post("/v1/orders/batch", {"orders": [body]}, format="json")

    single, batch = race(send, ["single", "batch"])
    return single.status_code, batch.status_code, batch.json()["results"][0].get("order", {}).get("order_id")


def test_a_single_create_and_a_batch_with_its_client_order_id_make_one_order_and_both_answer(make_account, fund,
                                                                                            as_trader):
    account = make_account()
    fund(account, "USD", "100000")
    answers = []
    for n in range(ROUNDS):
        body = {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01",
                "client_order_id": f"mixed-{n}"}
        answers.append(single_and_batch(as_trader, account, body))

    assert all(single in (200, 201) and batch == 200 and order_id for single, batch, order_id in answers), answers
    assert Order.objects.count() == ROUNDS
    assert balance_of(account, "USD").locked == Decimal("630") * ROUNDS
    assert audit() == []


def test_a_single_create_and_a_batch_both_checking_the_market_row_again_both_place(make_account, fund, as_trader):
    """This process's copy of BTC-USD still says halted (resumed from another process within its minute),
    so both check the market row again, locked (write_order's fallback)."""
    account = make_account()
    fund(account, "USD", "100000")
    answers = []
    for _ in range(ROUNDS):
        Market.objects.filter(pair="BTC-USD").update(status=Market.Status.HALTED)
        markets.recent_markets.reset()
        markets.access_market("BTC-USD", recent=True)
        Market.objects.filter(pair="BTC-USD").update(status=Market.Status.ONLINE)
        body = {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "60000", "size": "0.01"}
        answers.append(single_and_batch(as_trader, account, body))

    assert all((single, batch) == (201, 200) and order_id for single, batch, order_id in answers), answers
    assert Order.objects.count() == 2 * ROUNDS
    assert audit() == []
