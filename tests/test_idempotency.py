import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from trading import services
from trading.models import Order
from trading.orders import OrderRequest

from .conftest import balance_of

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_identical_creates_racing_each_other_make_one_order(make_account, fund):
    account = make_account()
    fund(account, "USD", "100000")
    rounds = 8

    def create(client_order_id, barrier):
        barrier.wait()
        try:
            return services.place_order(account, OrderRequest(
                "BTC-USD", "buy", "limit", price=Decimal("63000"), size=Decimal("0.01"), client_order_id=client_order_id
            ))
        finally:
            connection.close()

    for n in range(rounds):
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(create, [f"race-{n}"] * 2, [barrier] * 2))
        assert len({order.pk for order, _ in results}) == 1
        assert sorted(created for _, created in results) == [False, True]

    assert Order.objects.count() == rounds
    assert balance_of(account, "USD").locked == Decimal("630") * rounds


def test_identical_http_creates_racing_each_other_make_one_order(make_account, fund, as_trader):
    """The same through the API, as a bot retrying on a timeout would send it: 201 once, 200 for the repeat."""
    account = make_account()
    fund(account, "USD", "100000")
    body = {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01",
            "client_order_id": "http-race"}
    barrier = threading.Barrier(2)

    def create(_):
        client = as_trader(account)
        barrier.wait()
        try:
            return client.post("/v1/orders", body, format="json")
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(create, range(2)))

    assert sorted(response.status_code for response in responses) == [200, 201]
    assert len({response.json()["order_id"] for response in responses}) == 1
    assert Order.objects.count() == 1 and balance_of(account, "USD").locked == Decimal("630")
