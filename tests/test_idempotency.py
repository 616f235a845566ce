from decimal import Decimal

import pytest

from trading import services
from trading.models import Order
from trading.orders import OrderRequest

from .conftest import balance_of
from .racing import race

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_identical_creates_racing_each_other_make_one_order(make_account, fund):
    account = make_account()
    fund(account, "USD", "100000")
    rounds = 8

    def create(client_order_id):
        return services.place_order(account, OrderRequest(
            "BTC-USD", "buy", "limit", price=Decimal("63000"), size=Decimal("0.01"), client_order_id=client_order_id
        ))

    for n in range(rounds):
        results = race(create, [f"race-{n}"] * 2)
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
    responses = race(lambda client: client.post("/v1/orders", body, format="json"),
                     [as_trader(account), as_trader(account)])

    assert sorted(response.status_code for response in responses) == [200, 201]
    assert len({response.json()["order_id"] for response in responses}) == 1
    assert Order.objects.count() == 1 and balance_of(account, "USD").locked == Decimal("630")
