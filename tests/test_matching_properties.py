"""Random order and cancel streams through the persisted matcher; the books must balance after every batch."""

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Account
from exchange.errors import ExchangeError
from trading import dispatch, services
from trading.audit import audit
from trading.models import Order
from trading.orders import OrderRequest

D = Decimal
PRICES = [D(p) for p in ("99.00", "99.50", "100.00", "100.50", "101.00")]

orders = st.fixed_dictionaries({
    "side": st.sampled_from(["buy", "sell"]),
    "type": st.sampled_from(["limit", "limit", "limit", "market", "stop"]),
    "price": st.sampled_from(PRICES),
    "size": st.sampled_from([D("0.001"), D("0.01"), D("0.05"), D("0.2")]),
    "tif": st.sampled_from(["GTC", "GTC", "IOC", "FOK"]),
    "post_only": st.booleans(),
    "stp": st.sampled_from(["cancel_oldest", "cancel_newest", "cancel_both"]),
    "by_funds": st.booleans(),
    "trigger": st.sampled_from([None, "above", "below"]),
})
steps = st.lists(
    st.tuples(st.integers(0, 2), st.one_of(orders, st.integers(0, 30)), st.booleans()), min_size=1, max_size=30
)


def request_for(spec: dict) -> OrderRequest:
    kind, side = spec["type"], spec["side"]
    if kind == "limit":
        post_only = spec["post_only"] and spec["tif"] == "GTC"
        return OrderRequest("BTC-USD", side, kind, price=spec["price"], size=spec["size"],
                            time_in_force=spec["tif"], post_only=post_only, stp=spec["stp"])
    tif = "FOK" if spec["tif"] == "FOK" and not spec["by_funds"] else "IOC"
    amount = {"funds": spec["size"] * spec["price"]} if side == "buy" and spec["by_funds"] else {"size": spec["size"]}
    if kind == "market":
        return OrderRequest("BTC-USD", side, kind, time_in_force=tif, stp=spec["stp"], **amount)
    return OrderRequest("BTC-USD", side, kind, stop_price=spec["price"], time_in_force=tif, stp=spec["stp"],
                        trigger=spec["trigger"], **amount)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=steps)
def test_random_streams_keep_every_asset_conserved_and_holds_exact(make_account, fund, btc_usd, steps):
    dispatch.reset()
    accounts = [make_account() for _ in range(3)]
    for account in accounts:
        fund(account, "USD", "1000")
        fund(account, "BTC", "2")
    placed: list[Order] = []

    for who, action, run_matcher_now in steps:
        account = accounts[who]
        if isinstance(action, int):
            if placed:
                order = placed[action % len(placed)]
                try:
                    services.request_cancel(order.account, order.pk)
                except ExchangeError as error:
                    assert error.code == "ORDER_ALREADY_CLOSED"
        else:
            # A market order by size is judged at the book's best price (a buy with no asks is refused);
            # every other order at its own price: below the minimum notional it is invalid, else it holds.
            by_size_at_the_book = action["type"] == "market" and not (action["side"] == "buy" and action["by_funds"])
            below_minimum = action["price"] * action["size"] < btc_usd.min_notional
            try:
                order, _ = services.place_order(account, request_for(action))
                placed.append(order)
                assert by_size_at_the_book or not below_minimum
            except ExchangeError as error:
                if by_size_at_the_book:
                    assert error.code in ("INSUFFICIENT_FUNDS", "INVALID_REQUEST")
                else:
                    assert error.code == ("INVALID_REQUEST" if below_minimum else "INSUFFICIENT_FUNDS")
        if run_matcher_now:
            dispatch.matcher_for("BTC-USD").run_batch()
            assert audit() == []

    dispatch.matcher_for("BTC-USD").drain()
    assert audit() == []
    assert not Order.objects.filter(status="pending").exists()
    assert Account.objects.get(kind="fee").balances.exists() == Order.objects.filter(filled_size__gt=0).exists()
