"""POST /v1/orders/batch and POST /v1/orders/cancel: one result per item, in order, each as its own request
would have had; retries place nothing twice; refusals write nothing."""

import json
from decimal import Decimal

import pytest

from exchange.ratelimit import MAX_REQUEST_WEIGHT
from trading import batch, dispatch
from trading.models import MatcherCommand, Order

from .conftest import balance_of, ledger_snapshot
from .test_public_api import assert_error

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

D = Decimal
BATCH, CANCEL = "/v1/orders/batch", "/v1/orders/cancel"


def buy(price: str, size: str = "0.01", **more) -> dict:
    return {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": price, "size": size, **more}


def written():
    return ledger_snapshot(), sorted(Order.objects.values_list("id", "status", "cancel_requested")), \
        MatcherCommand.objects.count()


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    assert set(response.json()) == {"results"}
    return response.json()["results"]


@pytest.fixture
def woken(monkeypatch):
    """The pairs whose matcher is woken, in order (the wake-ups still happen)."""
    pairs, wake = [], dispatch.wake_matcher

    def recording(pair):
        pairs.append(pair)
        wake(pair)

    monkeypatch.setattr(dispatch, "wake_matcher", recording)
    return pairs


def test_a_batch_places_each_order_in_order_and_wakes_each_pair_once(as_trader, alice, woken):
    orders = [buy("60000"), buy("60001", client_order_id="b-2"),
              {"pair": "ETH-USD", "side": "buy", "type": "limit", "price": "3000", "size": "0.1"}, buy("60002")]

    items = results(as_trader(alice).post(BATCH, {"orders": orders}, format="json"))

    assert [item["status"] for item in items] == [201, 201, 201, 201]
    assert [(item["order"]["pair"], item["order"]["price"], item["order"]["status"]) for item in items] == [
        ("BTC-USD", "60000.00", "open"), ("BTC-USD", "60001.00", "open"), ("ETH-USD", "3000.00", "open"),
        ("BTC-USD", "60002.00", "open")]
    assert items[1]["order"]["client_order_id"] == "b-2"
    assert sorted(woken) == ["BTC-USD", "ETH-USD"]
    assert balance_of(alice, "USD").locked == D("600") + D("600.01") + D("300") + D("600.02")
    assert [o.pk for o in Order.objects.order_by("pk")] == [item["order"]["order_id"] for item in items]


def test_each_item_gets_its_own_error_and_a_refused_one_writes_nothing(as_trader, alice, bob):
    as_trader(bob).post("/v1/orders", {**buy("59000"), "side": "sell", "size": "0.5"}, format="json")  # an ask
    good = buy("58000")
    orders = [good, buy("58000", prize="1"), buy("58000", size="100"), {**good, "pair": "DOGE-USD"},
              buy("60000", post_only=True), "not an order", buy("58001"),
              buy("58000", size="99999999999999")]  # a hold past what any amount holds (10^18)

    items = results(as_trader(alice).post(BATCH, {"orders": orders}, format="json"))

    assert [item["status"] for item in items] == [201, 400, 400, 404, 409, 400, 201, 400]
    codes = [item.get("error", {}).get("code") for item in items]
    assert codes == [None, "INVALID_REQUEST", "INSUFFICIENT_FUNDS", "UNKNOWN_PAIR", "POST_ONLY_WOULD_TAKE",
                     "INVALID_REQUEST", None, "INSUFFICIENT_FUNDS"]
    assert items[1]["error"]["details"] == {"fields": {"prize": ["Unknown field."]}}
    rejected = Order.objects.get(pk=items[4]["error"]["details"]["order_id"])
    assert rejected.status == Order.Status.REJECTED  # as the single endpoint leaves it
    assert set(Order.objects.filter(account=alice).values_list("status", flat=True)) == {"open", "rejected"}
    assert Order.objects.filter(account=alice).count() == 3
    assert balance_of(alice, "USD").locked == D("580") + D("580.01")  # the two good ones only


def test_the_same_batch_again_places_nothing_twice(as_trader, alice):
    orders = [buy("60000", client_order_id="r-1"), buy("60001", client_order_id="r-2")]
    first = results(as_trader(alice).post(BATCH, {"orders": orders}, format="json"))
    before = written()

    again = results(as_trader(alice).post(BATCH, {"orders": orders}, format="json"))

    assert [item["status"] for item in first] == [201, 201] and [item["status"] for item in again] == [200, 200]
    assert [item["order"]["order_id"] for item in again] == [item["order"]["order_id"] for item in first]
    assert written() == before


def test_a_retry_that_changes_an_order_is_refused_for_that_order_only(as_trader, alice):
    as_trader(alice).post(BATCH, {"orders": [buy("60000", client_order_id="c-1")]}, format="json")

    items = results(as_trader(alice).post(BATCH, {"orders": [buy("60005", client_order_id="c-1"), buy("60006")]},
                                          format="json"))

    assert [item["status"] for item in items] == [409, 201]
    assert items[0]["error"]["code"] == "DUPLICATE_CLIENT_ORDER_ID"


def test_one_client_order_id_twice_in_a_batch_makes_one_order(as_trader, alice):
    items = results(as_trader(alice).post(BATCH, {"orders": [buy("60000", client_order_id="twice")] * 2},
                                          format="json"))

    assert [item["status"] for item in items] == [201, 200]
    assert items[0]["order"]["order_id"] == items[1]["order"]["order_id"]
    assert Order.objects.count() == 1


def test_an_item_repeating_a_client_order_id_of_its_batch_answers_as_the_order_was_left(as_trader, alice, bob):
    """As two requests would: the repeat shows the order as its matcher left it, not as it was accepted."""
    as_trader(alice).post("/v1/orders", {**buy("63000", size="0.5"), "side": "sell"}, format="json")
    taker = buy("63000", size="0.1", client_order_id="taker")
    post_only = buy("63000", size="0.1", client_order_id="maker", post_only=True)

    filled = results(as_trader(bob).post(BATCH, {"orders": [taker, taker]}, format="json"))
    rejected = results(as_trader(bob).post(BATCH, {"orders": [post_only, post_only]}, format="json"))

    assert [(item["status"], item["order"]["status"]) for item in filled] == [(201, "filled"), (200, "filled")]
    assert [(item["status"], item["error"]["code"]) for item in rejected] == [(409, "POST_ONLY_WOULD_TAKE")] * 2
    single_retry = as_trader(bob).post("/v1/orders", post_only, format="json")
    assert_error(single_retry, 409, "POST_ONLY_WOULD_TAKE")


@pytest.mark.parametrize("body", [
    {"orders": []}, {"orders": [buy("60000")] * 21}, {"orders": buy("60000")}, {"orders": "x"}, {},
    {"orders": [buy("60000")], "pair": "BTC-USD"}, [buy("60000")],
])
def test_a_batch_that_is_not_a_list_of_1_to_20_is_refused_whole(as_trader, alice, body):
    before = written()

    assert_error(as_trader(alice).post(BATCH, body, format="json"), 400, "INVALID_REQUEST")
    assert written() == before


def test_a_batch_weighs_one_per_order_and_needs_the_trade_scope(alice, make_key):
    bot = make_key(alice)

    first = bot.post(BATCH, {"orders": [buy("60000"), buy("60001"), buy("60002")]})
    refused = make_key(alice, scope="read_only").post(BATCH, {"orders": [buy("60003")]})

    assert first.status_code == 200, first.content
    assert first["X-RateLimit-Remaining"] == str(1200 - 3)
    assert_error(refused, 403, "INSUFFICIENT_SCOPE")
    assert Order.objects.count() == 3


def test_a_full_batch_fits_the_smallest_budget_a_tier_may_have(alice, make_key):
    alice.rate_tier.weight_per_minute = MAX_REQUEST_WEIGHT
    alice.rate_tier.full_clean()  # the least the admin's form takes
    alice.rate_tier.save()
    bot = make_key(alice)

    first = bot.post(BATCH, {"orders": [buy(str(50000 + i)) for i in range(batch.MAX_ITEMS)]})
    second = bot.post(BATCH, {"orders": [buy("49000")]})

    assert [item["status"] for item in results(first)] == [201] * batch.MAX_ITEMS
    assert first["X-RateLimit-Remaining"] == "0"
    assert_error(second, 429, "RATE_LIMITED")
    assert Order.objects.count() == batch.MAX_ITEMS


def test_a_batch_body_that_is_not_json_weighs_one_and_is_refused(alice, make_key):
    bot = make_key(alice)
    body = b'{"orders": [1, 2, 3'

    response = bot.client.generic("POST", BATCH, body, content_type="application/json",
                                  headers=bot.headers("POST", BATCH, body))

    assert_error(response, 400, "INVALID_REQUEST")
    assert response["X-RateLimit-Remaining"] == str(1200 - 1)


@pytest.fixture
def resting(as_trader, alice):
    """Three resting buys of alice's: ids, the last two with client ids."""
    orders = [buy("60000"), buy("60001", client_order_id="k-1"), buy("60002", client_order_id="k-2")]
    return [item["order"]["order_id"] for item in
            results(as_trader(alice).post(BATCH, {"orders": orders}, format="json"))]


def test_cancel_by_ids_releases_each_hold(as_trader, alice, resting, woken):
    items = results(as_trader(alice).post(CANCEL, {"order_ids": resting[:2]}, format="json"))

    assert [(item["status"], item["order"]["order_id"], item["order"]["status"]) for item in items] == [
        (200, resting[0], "cancelled"), (200, resting[1], "cancelled")]
    assert woken == ["BTC-USD"]
    assert balance_of(alice, "USD").locked == D("600.02")


def test_cancel_by_client_ids_names_what_is_not_found_and_repeats_alike(as_trader, alice, bob, resting):
    bobs = as_trader(bob).post("/v1/orders", buy("50000", client_order_id="k-1"), format="json").json()
    body = {"client_order_ids": ["k-2", "nope", "k-2"]}

    first = results(as_trader(alice).post(CANCEL, body, format="json"))
    before = written()
    again = results(as_trader(alice).post(CANCEL, body, format="json"))
    repeated_wrote_nothing = written() == before
    bobs_own = results(as_trader(bob).post(CANCEL, {"order_ids": [resting[1], bobs["order_id"]]}, format="json"))

    assert [item["status"] for item in first] == [200, 404, 200]
    assert first[1]["error"]["code"] == "ORDER_NOT_FOUND" and "nope" in first[1]["error"]["message"]
    assert first[0]["order"]["order_id"] == resting[2] and first[0]["order"]["status"] == "cancelled"
    assert [item["status"] for item in again] == [200, 404, 200] and repeated_wrote_nothing
    assert [item["status"] for item in bobs_own] == [404, 200]  # alice's order is not bob's to cancel
    assert Order.objects.get(pk=resting[1]).status == "open"
    assert balance_of(alice, "USD").locked == D("600") + D("600.01")


def test_a_closed_order_or_halted_market_refuses_its_item_only(as_trader, alice, bob, resting, btc_usd):
    as_trader(bob).post("/v1/orders", {**buy("60002"), "side": "sell"}, format="json")  # fills resting[2]
    eth = as_trader(alice).post("/v1/orders", {"pair": "ETH-USD", "side": "buy", "type": "limit", "price": "3000",
                                               "size": "0.1"}, format="json").json()
    btc_usd.status = "halted"
    btc_usd.save()

    items = results(as_trader(alice).post(CANCEL, {"order_ids": [resting[2], resting[0], eth["order_id"]]},
                                          format="json"))

    assert [(item["status"], item.get("error", {}).get("code")) for item in items] == [
        (409, "ORDER_ALREADY_CLOSED"), (409, "MARKET_HALTED"), (200, None)]
    assert Order.objects.get(pk=resting[0]).cancel_requested is False


@pytest.mark.parametrize("body", [
    {}, {"order_ids": []}, {"order_ids": list(range(1, 22))}, {"order_ids": [1], "client_order_ids": ["a"]},
    {"order_ids": ["x"]}, {"order_ids": [0]}, {"client_order_ids": ["has space"]}, {"order_ids": 5},
    {"order_ids": [1], "pair": "BTC-USD"},
])
def test_a_cancel_batch_that_is_not_a_list_of_ids_is_refused_whole(as_trader, alice, resting, body):
    before = written()

    assert_error(as_trader(alice).post(CANCEL, body, format="json"), 400, "INVALID_REQUEST")
    assert written() == before


def test_a_cancel_batch_weighs_one_per_id(alice, make_key, resting):
    response = make_key(alice).post(CANCEL, {"client_order_ids": ["k-1", "k-2"]})

    assert [item["status"] for item in results(response)] == [200, 200]
    assert response["X-RateLimit-Remaining"] == str(1200 - 2)


def test_the_batch_endpoints_are_documented_with_their_items(api, markets):
    schema = json.loads(api.get("/v1/openapi.json").content)

    for path in (BATCH, CANCEL):
        operation = schema["paths"][path]["post"]
        assert "200" in operation["responses"] and "400" in operation["responses"]
        assert "INVALID_PARAMETER" in operation["responses"]["400"]["description"]
    assert "`OrderRequest` schema" in json.dumps(schema["components"]["schemas"]["OrderBatchRequest"])

