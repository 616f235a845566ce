"""Stops that trigger above or below their stop price whatever their side: a take-profit sell above the
market, a buy stop below it; the side's own way by default; rebuilt the same by a restarted matcher."""

from decimal import Decimal
from importlib import import_module

import pytest
from django.apps import apps as django_apps

from trading import dispatch
from trading.audit import audit
from trading.models import MatcherCommand, Order

from .conftest import balance_of, ledger_snapshot
from .test_public_api import assert_error
from .test_python_client import Client, in_process_http  # noqa: F401  the fixture

# Real commits: the matcher runs when the accepting transaction commits, before the response.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

D = Decimal
PAIR = {"pair": "BTC-USD"}


@pytest.fixture
def market_at_63000(as_trader, bob, funded):
    """The last trade printed at 63,000; returns ``print_at(price)``, which prints a trade at ``price`` between
    two other accounts (bob rests a sell, carol takes it)."""
    carol = funded("carol", USD="100000", BTC="10")

    def print_at(price: str, size: str = "0.01") -> None:
        as_trader(bob).post("/v1/orders", {**PAIR, "side": "sell", "type": "limit", "price": price, "size": size},
                            format="json")
        taker = as_trader(carol).post("/v1/orders", {**PAIR, "side": "buy", "type": "limit", "price": price,
                                                     "size": size}, format="json")
        assert taker.json()["status"] == "filled", taker.json()

    print_at("63000")
    return print_at


def order(client, **fields):
    response = client.post("/v1/orders", {**PAIR, **fields}, format="json")
    assert response.status_code in (200, 201), response.json()
    return response.json()


def status_of(order_id: int) -> str:
    return Order.objects.get(pk=order_id).status


def test_a_take_profit_sell_waits_above_the_market_and_sells_once_a_trade_prints_there(as_trader, alice,
                                                                                      market_at_63000):
    client = as_trader(alice)
    take_profit = order(client, side="sell", type="stop", stop_price="65000", price="64900", size="0.5",
                        trigger="above")

    assert take_profit["status"] == "untriggered" and take_profit["trigger"] == "above"
    assert balance_of(alice, "BTC").locked == D("0.5")
    market_at_63000("64000")
    assert status_of(take_profit["order_id"]) == "untriggered"
    market_at_63000("65000")
    assert status_of(take_profit["order_id"]) == "open"  # entered as a sell limit at 64,900, resting
    assert Order.objects.get(pk=take_profit["order_id"]).price == D("64900")
    assert audit() == []


def test_a_buy_stop_below_the_market_buys_once_a_trade_prints_at_or_below_it(as_trader, alice, bob,
                                                                            market_at_63000):
    client = as_trader(alice)
    dip = order(client, side="buy", type="stop", stop_price="62000", size="0.01", trigger="below")
    as_trader(bob).post("/v1/orders", {**PAIR, "side": "sell", "type": "limit", "price": "62500", "size": "1"},
                        format="json")  # what the stop will buy

    assert dip["status"] == "untriggered" and dip["trigger"] == "below"
    market_at_63000("62100")
    assert status_of(dip["order_id"]) == "untriggered"
    market_at_63000("62000")
    dip_order = Order.objects.get(pk=dip["order_id"])
    assert dip_order.status == "filled" and dip_order.filled_size == D("0.01")
    assert balance_of(alice, "USD").locked == 0  # the stop-market buy's hold (stop price + 5 %) released
    assert audit() == []


@pytest.mark.parametrize("side,default", [("buy", "above"), ("sell", "below")])
def test_a_stop_without_a_trigger_triggers_the_sides_own_way(as_trader, alice, market_at_63000, side, default):
    stop_price = "64000" if side == "buy" else "62000"

    placed = order(as_trader(alice), side=side, type="stop", stop_price=stop_price, price=stop_price, size="0.01")

    assert placed["status"] == "untriggered" and placed["trigger"] == default
    assert Order.objects.get(pk=placed["order_id"]).trigger == default


@pytest.mark.parametrize("side,trigger,stop_price", [
    ("sell", "above", "62000"),  # a take-profit already reached: the last trade (63,000) is above it
    ("buy", "below", "64000"),
])
def test_a_stop_already_crossed_by_the_last_trade_triggers_at_once(as_trader, alice, market_at_63000, side, trigger,
                                                                   stop_price):
    placed = order(as_trader(alice), side=side, type="stop", trigger=trigger, stop_price=stop_price,
                   price="10000" if side == "buy" else "90000", size="0.01")

    assert placed["status"] == "open"  # entered as its limit at once; nothing to trade with at that price


def test_untriggered_stops_are_listed_by_status_and_in_live(as_trader, alice, market_at_63000):
    client = as_trader(alice)
    above = order(client, side="sell", type="stop", stop_price="65000", size="0.01", trigger="above")
    below = order(client, side="sell", type="stop", stop_price="61000", size="0.01")
    resting = order(client, side="buy", type="limit", price="60000", size="0.01")

    untriggered = client.get("/v1/orders?status=untriggered").json()["results"]
    live = client.get("/v1/orders?status=live").json()["results"]

    assert [(o["order_id"], o["trigger"]) for o in untriggered] == [(below["order_id"], "below"),
                                                                     (above["order_id"], "above")]
    assert [o["order_id"] for o in live] == [resting["order_id"], below["order_id"], above["order_id"]]
    assert resting["trigger"] is None


def test_a_restarted_matcher_rebuilds_stops_of_both_directions(as_trader, alice, market_at_63000):
    client = as_trader(alice)
    take_profit = order(client, side="sell", type="stop", stop_price="64000", price="63500", size="0.01",
                        trigger="above")
    stop_loss = order(client, side="sell", type="stop", stop_price="62000", price="61500", size="0.01",
                      trigger="below")
    dispatch.reset()  # a new matcher process: the book, stops included, is rebuilt from the database

    market_at_63000("63500")  # below the take-profit: it waits (a sell's default way would have fired)
    market_at_63000("64000")

    assert status_of(take_profit["order_id"]) == "open" and status_of(stop_loss["order_id"]) == "untriggered"
    dispatch.reset()
    market_at_63000("63000")
    assert status_of(stop_loss["order_id"]) == "untriggered"
    market_at_63000("62000")
    assert status_of(stop_loss["order_id"]) == "open"
    assert audit() == []


def test_a_retry_may_spell_the_default_trigger_or_leave_it_out_but_not_change_it(as_trader, alice, market_at_63000):
    client = as_trader(alice)
    body = {"side": "buy", "type": "stop", "stop_price": "64000", "size": "0.01", "client_order_id": "breakout"}
    first = client.post("/v1/orders", {**PAIR, **body}, format="json")

    again = client.post("/v1/orders", {**PAIR, **body, "trigger": "above"}, format="json")
    other = client.post("/v1/orders", {**PAIR, **body, "trigger": "below"}, format="json")

    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["order_id"] == first.json()["order_id"]
    assert_error(other, 409, "DUPLICATE_CLIENT_ORDER_ID")


@pytest.mark.parametrize("fields", [
    {"type": "limit", "price": "60000", "trigger": "above"},
    {"type": "market", "trigger": "below"},
    {"type": "stop", "stop_price": "64000", "trigger": "sideways"},
    {"type": "stop", "stop_price": "64000", "trigger": None},
])
def test_a_bad_trigger_or_one_on_an_order_that_is_not_a_stop_is_refused_and_writes_nothing(as_trader, alice, fields):
    before = ledger_snapshot(), Order.objects.count(), MatcherCommand.objects.count()

    response = as_trader(alice).post("/v1/orders", {**PAIR, "side": "buy", "size": "0.01", **fields}, format="json")

    assert_error(response, 400, "INVALID_REQUEST")
    assert "trigger" in response.json()["error"]["details"]["fields"]
    assert (ledger_snapshot(), Order.objects.count(), MatcherCommand.objects.count()) == before


def test_stops_placed_before_triggers_existed_get_their_sides_way(as_trader, alice):
    client = as_trader(alice)
    buy = order(client, side="buy", type="stop", stop_price="64000", size="0.01")
    sell = order(client, side="sell", type="stop", stop_price="62000", size="0.01")
    limit = order(client, side="buy", type="limit", price="60000", size="0.01")
    Order.objects.update(trigger=None)  # as the rows were before the migration

    import_module("trading.migrations.0013_order_stop_trigger").name_the_triggers_of_existing_stops(django_apps, None)

    assert {o.pk: o.trigger for o in Order.objects.all()} == {buy["order_id"]: "above", sell["order_id"]: "below",
                                                             limit["order_id"]: None}


def test_the_python_client_places_a_stop_with_its_trigger(alice, make_key,
                                                          in_process_http, market_at_63000):  # noqa: F811  the imported fixture
    bot = make_key(alice)

    with Client("http://testserver", bot.key_id, bot.secret, http=in_process_http) as client:
        placed = client.place_order("BTC-USD", "sell", "stop", stop_price="65000", size="0.01", trigger="above")

    assert placed["status"] == "untriggered" and placed["trigger"] == "above"
