import logging
import re
from decimal import Decimal

import pytest

from exchange import logs
from trading.models import BookLevel, LedgerEntry, MatcherCommand, Order

from .conftest import balance_of, ledger_snapshot
from .test_public_api import assert_error

# Real commits: the matcher runs when the accepting transaction commits, before the response.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

D = Decimal
LIMIT_BUY = {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01"}


def nothing_written():
    return ledger_snapshot(), Order.objects.count(), MatcherCommand.objects.count()


def test_limit_buy_rests_with_its_funds_held(as_trader, alice):
    response = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "open"
    assert body["price"] == "63000.00" and body["size"] == "0.01000000"
    assert body["filled_size"] == "0.00000000" and body["remaining_size"] == "0.01000000"
    assert body["average_fill_price"] is None and body["fee_asset"] == "BTC"
    assert balance_of(alice, "USD").locked == D("630") and balance_of(alice, "USD").available == D("99370")
    assert BookLevel.objects.get().price == D("63000")


def test_two_accounts_trade_and_balances_come_out_to_the_cent(as_trader, alice, bob):
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "size": "0.5"}, format="json")

    taker = as_trader(bob).post("/v1/orders", {"pair": "BTC-USD", "side": "sell", "type": "market", "size": "0.2"},
                                format="json").json()

    assert taker["status"] == "filled"
    assert taker["average_fill_price"] == "63000.00" and taker["executed_value"] == "12600.00"
    assert taker["fee"] == "25.20" and taker["fee_asset"] == "USD"  # 0.2 % taker
    assert balance_of(bob, "USD").available == D("100000") + D("12600") - D("25.2")
    assert balance_of(bob, "BTC").available == D("9.8")
    assert balance_of(alice, "BTC").available == D("10") + D("0.2") - D("0.0002")  # 0.1 % maker, in BTC
    assert balance_of(alice, "USD").locked == D("18900")  # 0.3 BTC still bid at 63,000
    fills = as_trader(alice).get("/v1/fills").json()["results"]
    assert [(f["liquidity"], f["size"], f["fee"], f["fee_asset"]) for f in fills] == [
        ("maker", "0.20000000", "0.00020000", "BTC")
    ]


def test_fills_carry_their_orders_client_order_id_at_no_query_per_fill(as_trader, alice, bob):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_to_list_fills():
        with CaptureQueriesContext(connection) as listed:
            fills = as_trader(alice).get("/v1/fills").json()["results"]
        return fills, len(listed)

    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "size": "0.5", "client_order_id": "grid-1"}, format="json")
    as_trader(bob).post("/v1/orders", {**LIMIT_BUY, "side": "sell"}, format="json")
    one, queries_for_one = queries_to_list_fills()
    for _ in range(3):
        as_trader(bob).post("/v1/orders", {**LIMIT_BUY, "side": "sell"}, format="json")
    four, queries_for_four = queries_to_list_fills()

    assert [fill["client_order_id"] for fill in one] == ["grid-1"]
    assert [fill["client_order_id"] for fill in four] == ["grid-1"] * 4
    assert queries_for_four == queries_for_one
    assert [fill["client_order_id"] for fill in as_trader(bob).get("/v1/fills").json()["results"]] == [None] * 4


def test_balances_endpoint_lists_every_asset_and_wallet(as_trader, alice):
    as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")

    balances = {row["asset"]: row for row in as_trader(alice).get("/v1/account/balances").json()["balances"]}

    assert set(balances) == {"BTC", "ETH", "USD"}
    assert balances["USD"]["spot"] == {"available": "99370.00", "locked": "630.00", "total": "100000.00"}
    assert balances["ETH"]["spot"] == {"available": "0.00000000", "locked": "0.00000000", "total": "0.00000000"}
    assert balances["USD"]["margin"]["total"] == "0.00" and balances["USD"]["earn"]["total"] == "0.00"


def test_insufficient_funds_is_refused_and_writes_nothing(as_trader, alice):
    before = nothing_written()

    response = as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "size": "2"}, format="json")

    assert_error(response, 400, "INSUFFICIENT_FUNDS")
    assert response.json()["error"]["details"]["shortfalls"][0]["asset"] == "USD"
    assert nothing_written() == before


@pytest.mark.parametrize("order", [
    {**LIMIT_BUY, "price": "999999999999999999", "size": "99999999999"},
    {**LIMIT_BUY, "size": "99999999999999"},  # at the usual price
    {"pair": "BTC-USD", "side": "buy", "type": "stop", "stop_price": "63000", "size": "99999999999999"},
])
def test_a_buy_holding_more_than_any_balance_can_is_refused_as_short_and_writes_nothing(as_trader, alice, order):
    """Each of price and size may have 18 integer digits; what a buy holds, their product, may then be past
    what an amount holds (10^18): refused as any hold beyond the balance, on every stack."""
    before = nothing_written()

    response = as_trader(alice).post("/v1/orders", order, format="json")

    assert_error(response, 400, "INSUFFICIENT_FUNDS")
    assert response.json()["error"]["details"]["shortfalls"][0]["asset"] == "USD"
    assert nothing_written() == before


@pytest.mark.parametrize("status", ["halted", "cancel_only"])
def test_halted_and_cancel_only_markets_refuse_new_orders(as_trader, alice, btc_usd, status):
    btc_usd.status = status
    btc_usd.save()
    before = nothing_written()

    response = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")

    assert_error(response, 409, "MARKET_HALTED")
    assert nothing_written() == before


@pytest.mark.parametrize("change,field", [
    ({"price": 63000.5}, "price"),
    ({"size": 0.01}, "size"),
    ({"price": "6.3e4"}, "price"),
    ({"price": "-63000"}, "price"),
    ({"price": "NaN"}, "price"),
    ({"price": "0"}, "price"),
    ({"price": "63000.001"}, "price"),
    ({"size": "0.000000001"}, "size"),
    ({"size": "0.000001"}, "size"),
    ({"size": "0.00001", "price": "1.00"}, "size"),
    ({"side": "hold"}, "side"),
    ({"prize": "1"}, "prize"),
    ({"type": "market"}, "price"),
    ({"type": "limit", "price": None}, "price"),
    ({"funds": "100"}, "funds"),
    ({"time_in_force": "GTD"}, "time_in_force"),
    ({"post_only": True, "time_in_force": "IOC"}, "post_only"),
    ({"client_order_id": "has spaces"}, "client_order_id"),
])
def test_bad_order_input_is_refused_with_field_errors_and_writes_nothing(as_trader, alice, change, field):
    body = {k: v for k, v in {**LIMIT_BUY, **change}.items() if v is not None}
    before = nothing_written()

    response = as_trader(alice).post("/v1/orders", body, format="json")

    assert_error(response, 400, "INVALID_REQUEST")
    assert field in response.json()["error"]["details"]["fields"]
    assert nothing_written() == before


@pytest.mark.parametrize("body", [
    {"pair": "BTC-USD", "side": "sell", "type": "market", "funds": "100"},
    {"pair": "BTC-USD", "side": "buy", "type": "market", "size": "0.1", "funds": "100"},
    {"pair": "BTC-USD", "side": "buy", "type": "market", "size": "0.1", "time_in_force": "GTC"},
    {"pair": "BTC-USD", "side": "buy", "type": "stop", "size": "0.1"},
    {"pair": "BTC-USD", "side": "buy", "type": "market", "funds": "100", "time_in_force": "FOK"},
])
def test_impossible_order_shapes_are_refused(as_trader, alice, body):
    assert_error(as_trader(alice).post("/v1/orders", body, format="json"), 400, "INVALID_REQUEST")


@pytest.mark.parametrize("body,field", [
    ({"side": "buy", "type": "market", "funds": "100.00000000001"}, "funds"),  # off the tick × lot grid
    ({"side": "buy", "type": "market", "funds": "0.99"}, "funds"),  # below the minimum notional (1.00)
    ({"side": "sell", "type": "market", "size": "0.00001"}, "size"),  # 0.63 at the best bid, 63,000
    ({"side": "buy", "type": "stop", "stop_price": "63000", "size": "0.00001"}, "size"),  # 0.63 at the stop
])
def test_orders_without_a_limit_are_held_to_the_minimum_notional_too(as_trader, alice, bob, body, field):
    as_trader(bob).post("/v1/orders", LIMIT_BUY, format="json")  # the best bid: 63,000
    before = nothing_written()

    response = as_trader(alice).post("/v1/orders", {"pair": "BTC-USD", **body}, format="json")

    assert_error(response, 400, "INVALID_REQUEST")
    assert field in response.json()["error"]["details"]["fields"]
    assert nothing_written() == before


def test_malformed_json_is_invalid_request(as_trader, alice):
    response = as_trader(alice).generic("POST", "/v1/orders", "{not json", content_type="application/json")

    assert_error(response, 400, "INVALID_REQUEST")


def test_unknown_pair_on_create(as_trader, alice):
    assert_error(as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "pair": "DOGE-USD"}, format="json"),
                 404, "UNKNOWN_PAIR")


def test_unauthenticated_order_calls_are_refused(api, markets):
    assert_error(api.post("/v1/orders", LIMIT_BUY, format="json"), 401, "MISSING_AUTH_HEADERS")
    assert_error(api.get("/v1/account/balances"), 401, "MISSING_AUTH_HEADERS")


def test_same_client_order_id_and_body_returns_the_same_order(as_trader, alice):
    client = as_trader(alice)
    first = client.post("/v1/orders", {**LIMIT_BUY, "client_order_id": "bot-1"}, format="json")

    again = client.post("/v1/orders", {**LIMIT_BUY, "price": "63000.00", "client_order_id": "bot-1"}, format="json")

    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["order_id"] == first.json()["order_id"]
    assert Order.objects.count() == 1
    assert balance_of(alice, "USD").locked == D("630")
    assert client.get("/v1/orders/client:bot-1").json()["order_id"] == first.json()["order_id"]


def test_same_client_order_id_with_another_body_is_409(as_trader, alice):
    client = as_trader(alice)
    client.post("/v1/orders", {**LIMIT_BUY, "client_order_id": "bot-1"}, format="json")
    before = nothing_written()

    response = client.post("/v1/orders", {**LIMIT_BUY, "size": "0.02", "client_order_id": "bot-1"}, format="json")

    assert_error(response, 409, "DUPLICATE_CLIENT_ORDER_ID")
    assert nothing_written() == before


def test_client_order_ids_are_per_account(as_trader, alice, bob):
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "client_order_id": "x-1"}, format="json")

    response = as_trader(bob).post("/v1/orders", {**LIMIT_BUY, "client_order_id": "x-1"}, format="json")

    assert response.status_code == 201
    assert Order.objects.filter(client_order_id="x-1").count() == 2


def test_cancel_releases_the_hold_and_repeating_it_gives_the_same_outcome(as_trader, alice):
    client = as_trader(alice)
    order_id = client.post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]

    first = client.post(f"/v1/orders/{order_id}/cancel")
    entries = LedgerEntry.objects.count()
    second = client.post(f"/v1/orders/{order_id}/cancel")

    assert first.status_code == 200 and second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "cancelled"
    assert first.json()["cancel_reason"] == second.json()["cancel_reason"] == "user"
    assert LedgerEntry.objects.count() == entries
    assert balance_of(alice, "USD").locked == 0 and balance_of(alice, "USD").available == D("100000")
    assert not BookLevel.objects.exists()


def test_self_trade_prevention_says_why_the_resting_order_was_cancelled(as_trader, alice, bob):
    client = as_trader(alice)
    resting = client.post("/v1/orders", LIMIT_BUY, format="json").json()
    bob_ask = as_trader(bob).post("/v1/orders", {**LIMIT_BUY, "side": "sell", "price": "63001"}, format="json").json()

    taker = client.post("/v1/orders", {**LIMIT_BUY, "side": "sell", "price": "62000", "size": "0.02"},
                        format="json").json()

    cancelled = client.get(f"/v1/orders/{resting['order_id']}").json()
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "self_trade")
    assert (taker["status"], taker["cancel_reason"]) == ("open", "")  # rests at 62,000: no other bid
    assert client.post(f"/v1/orders/{resting['order_id']}/cancel").json()["cancel_reason"] == "self_trade"
    assert bob_ask["status"] == "open"


def test_cancel_of_a_filled_order_is_409_with_its_state(as_trader, alice, bob):
    order_id = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]
    as_trader(bob).post("/v1/orders", {**LIMIT_BUY, "side": "sell"}, format="json")

    response = as_trader(alice).post(f"/v1/orders/{order_id}/cancel")

    assert_error(response, 409, "ORDER_ALREADY_CLOSED")
    assert response.json()["error"]["details"] | {"order_id": 0} == {"order_id": 0, "status": "filled",
                                                                     "filled_size": "0.01000000"}


@pytest.mark.parametrize("batch", [False, True])
def test_a_cancel_queued_behind_the_fill_of_its_order_is_409_with_the_fill(as_trader, alice, bob, monkeypatch, batch):
    """The fill's batch commits before the one that takes the cancel, which then changes nothing: the answer
    is the order as that fill left it, not the row as the cancel read it, still open."""
    from trading import matcher, pipeline, services
    from trading.orders import OrderRequest

    monkeypatch.setattr(matcher, "BATCH_SIZE", 1)  # each command a batch of its own
    monkeypatch.setattr(pipeline, "FIRST_BATCH_SIZE", 1)
    client = as_trader(alice)
    order_id = client.post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]
    services.place_order(bob, OrderRequest(pair="BTC-USD", side="sell", type="limit", price=D("63000"),
                                           size=D("0.01")), wake=False)  # queued ahead of the cancel

    if batch:
        item = client.post("/v1/orders/cancel", {"order_ids": [order_id]}, format="json").json()["results"][0]
        status, error = item["status"], item["error"]
    else:
        response = client.post(f"/v1/orders/{order_id}/cancel")
        status, error = response.status_code, response.json()["error"]

    assert Order.objects.get(pk=order_id).status == "filled"
    assert (status, error["code"]) == (409, "ORDER_ALREADY_CLOSED")
    assert (error["details"]["status"], error["details"]["filled_size"]) == ("filled", "0.01000000")


def test_orders_of_other_accounts_are_not_found(as_trader, alice, bob):
    order_id = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]

    assert_error(as_trader(bob).get(f"/v1/orders/{order_id}"), 404, "ORDER_NOT_FOUND")
    assert_error(as_trader(bob).post(f"/v1/orders/{order_id}/cancel"), 404, "ORDER_NOT_FOUND")
    assert_error(as_trader(bob).get("/v1/orders/client:nope"), 404, "ORDER_NOT_FOUND")
    assert Order.objects.get(pk=order_id).status == "open"


def test_an_order_id_written_otherwise_than_as_the_server_gives_it_names_no_order(as_trader, alice):
    client = as_trader(alice)
    order_id = client.post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]

    for written in (f"0{order_id}", f"{order_id:019d}", "0", "1" * 19):
        assert_error(client.get(f"/v1/orders/{written}"), 404, "NOT_FOUND")
        assert_error(client.post(f"/v1/orders/{written}/cancel"), 404, "NOT_FOUND")
    assert Order.objects.get(pk=order_id).status == "open"


def test_cancels_on_halted_and_cancel_only_markets(as_trader, alice, btc_usd):
    client = as_trader(alice)
    order_id = client.post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]
    btc_usd.status = "halted"
    btc_usd.save()
    before = nothing_written()

    assert_error(client.post(f"/v1/orders/{order_id}/cancel"), 409, "MARKET_HALTED")
    assert nothing_written() == before

    btc_usd.status = "cancel_only"
    btc_usd.save()
    cancelled = client.post(f"/v1/orders/{order_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize("body,status", [
    ({"side": "sell", "type": "limit", "price": "70000", "size": "0.01", "time_in_force": "IOC"}, "expired"),
    ({"side": "buy", "type": "limit", "price": "63000", "size": "0.01", "post_only": True}, "rejected"),
])
def test_cancel_of_an_expired_or_rejected_order_is_409_with_its_state(as_trader, alice, bob, body, status):
    as_trader(bob).post("/v1/orders", {**LIMIT_BUY, "side": "sell", "price": "62000"}, format="json")
    client = as_trader(alice)
    created = client.post("/v1/orders", {"pair": "BTC-USD", **body}, format="json").json()
    order_id = created.get("order_id") or created["error"]["details"]["order_id"]
    before = nothing_written()

    response = client.post(f"/v1/orders/{order_id}/cancel")

    assert_error(response, 409, "ORDER_ALREADY_CLOSED")
    assert response.json()["error"]["details"] | {"order_id": 0} == {"order_id": 0, "status": status,
                                                                     "filled_size": "0.00000000"}  # not "0E-18"
    assert nothing_written() == before


def test_cancel_all_optionally_by_pair(as_trader, alice):
    client = as_trader(alice)
    client.post("/v1/orders", LIMIT_BUY, format="json")
    client.post("/v1/orders", {**LIMIT_BUY, "price": "62000"}, format="json")
    eth = client.post("/v1/orders", {**LIMIT_BUY, "pair": "ETH-USD", "price": "3000", "size": "1"}, format="json")

    response = client.post("/v1/orders/cancel-all", {"pair": "BTC-USD"}, format="json")

    assert response.status_code == 202
    assert [o["status"] for o in response.json()["orders"]] == ["cancelled", "cancelled"]
    assert Order.objects.get(pk=eth.json()["order_id"]).status == "open"
    assert balance_of(alice, "USD").locked == D("3000")


def test_cancel_all_leaves_a_halted_market_and_refuses_to_name_one(as_trader, alice, btc_usd):
    client = as_trader(alice)
    btc = client.post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]
    eth = client.post("/v1/orders", {**LIMIT_BUY, "pair": "ETH-USD", "price": "3000", "size": "1"},
                      format="json").json()["order_id"]
    btc_usd.status = "halted"
    btc_usd.save()
    before = nothing_written()

    named = client.post("/v1/orders/cancel-all", {"pair": "BTC-USD"}, format="json")
    assert_error(named, 409, "MARKET_HALTED")
    assert nothing_written() == before

    every = client.post("/v1/orders/cancel-all", {}, format="json")
    assert [(o["order_id"], o["status"]) for o in every.json()["orders"]] == [(eth, "cancelled")]
    left = Order.objects.get(pk=btc)
    assert (left.status, left.cancel_requested) == ("open", False)


def test_list_orders_filters_and_pages(as_trader, alice):
    client = as_trader(alice)
    ids = [client.post("/v1/orders", {**LIMIT_BUY, "price": str(60000 + i)}, format="json").json()["order_id"]
           for i in range(3)]
    client.post(f"/v1/orders/{ids[0]}/cancel")

    live = client.get("/v1/orders?status=live&pair=BTC-USD").json()
    page = client.get("/v1/orders?limit=2").json()
    rest = client.get(page["next"]).json()

    assert [o["order_id"] for o in live["results"]] == [ids[2], ids[1]]
    assert [o["order_id"] for o in page["results"] + rest["results"]] == ids[::-1]
    assert_error(client.get("/v1/orders?status=sleeping"), 400, "INVALID_PARAMETER")


def test_post_only_that_would_take_is_rejected(as_trader, alice, bob):
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "side": "sell"}, format="json")

    response = as_trader(bob).post("/v1/orders", {**LIMIT_BUY, "post_only": True}, format="json")

    assert_error(response, 409, "POST_ONLY_WOULD_TAKE")
    order = Order.objects.get(pk=response.json()["error"]["details"]["order_id"])
    assert order.status == "rejected" and order.reject_reason == "POST_ONLY_WOULD_TAKE"
    assert balance_of(bob, "USD").locked == 0


def test_a_post_only_order_that_would_take_is_listed_as_rejected_and_its_retry_refused_alike(as_trader, alice,
                                                                                               bob):
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "side": "sell"}, format="json")
    client = as_trader(bob)
    body = {**LIMIT_BUY, "post_only": True, "client_order_id": "maker-1"}

    first, retry = (client.post("/v1/orders", body, format="json") for _ in range(2))

    assert_error(first, 409, "POST_ONLY_WOULD_TAKE")
    assert_error(retry, 409, "POST_ONLY_WOULD_TAKE")
    order_id = first.json()["error"]["details"]["order_id"]
    assert retry.json()["error"]["details"]["order_id"] == order_id
    rejected = client.get("/v1/orders?status=rejected").json()["results"]
    assert [(o["order_id"], o["reject_reason"], o["client_order_id"]) for o in rejected] == [
        (order_id, "POST_ONLY_WOULD_TAKE", "maker-1")]
    assert client.get("/v1/orders?status=live").json()["results"] == []
    assert Order.objects.filter(account=bob).count() == 1


def test_market_buy_by_funds_spends_at_most_its_funds(as_trader, alice, bob):
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "side": "sell", "size": "0.01"}, format="json")
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "side": "sell", "price": "64000", "size": "1"}, format="json")

    order = as_trader(bob).post("/v1/orders", {"pair": "BTC-USD", "side": "buy", "type": "market", "funds": "1270"},
                                format="json").json()

    assert order["status"] == "filled"  # the funds are spent exactly: 630 at 63,000, then 640 at 64,000
    assert D(order["executed_value"]) == D("1270")
    assert D(order["filled_size"]) == D("0.01") + D("0.01")
    assert balance_of(bob, "USD").available == D("100000") - D("1270")
    assert balance_of(bob, "USD").locked == 0


def test_market_buy_by_size_is_bounded_and_releases_unused_hold(as_trader, alice, bob):
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "side": "sell", "size": "0.1"}, format="json")

    order = as_trader(bob).post("/v1/orders", {"pair": "BTC-USD", "side": "buy", "type": "market", "size": "0.1"},
                                format="json").json()

    assert order["status"] == "filled" and order["executed_value"] == "6300.00"
    assert balance_of(bob, "USD").available == D("93700") and balance_of(bob, "USD").locked == 0
    assert Order.objects.get(pk=order["order_id"]).protection_price == D("66150")  # 63,000 + 5 %


@pytest.mark.parametrize("order", [
    {"type": "stop", "stop_price": "999999999999999999.00", "size": "0.0001"},
    {"type": "market", "size": "0.0001"},  # reaching the ask below
])
def test_a_buy_whose_protection_price_would_pass_the_highest_price_is_refused_for_its_hold(as_trader, alice, bob,
                                                                                           order):
    """Stop price or worst ask plus 5 % can pass what a price column holds: the bound is the highest price."""
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "side": "sell", "price": "999999999999999999.00",
                                         "size": "0.0001"}, format="json")
    before = ledger_snapshot()

    refused = as_trader(bob).post("/v1/orders", {"pair": "BTC-USD", "side": "buy", **order}, format="json")

    # Held: 0.0001 x 999,999,999,999,999,999.99, which bob's 100,000 USD does not cover.
    assert_error(refused, 400, "INSUFFICIENT_FUNDS")
    assert ledger_snapshot() == before


def test_a_protection_price_is_at_most_the_highest_price(as_trader, alice, bob, fund):
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "side": "sell", "price": "999999999999999999.00",
                                         "size": "0.0001"}, format="json")
    fund(bob, "USD", "200000000000000")

    order = as_trader(bob).post("/v1/orders", {"pair": "BTC-USD", "side": "buy", "type": "market", "size": "0.0001"},
                                format="json").json()

    assert order["status"] == "filled" and order["executed_value"] == "99999999999999.9999"
    assert Order.objects.get(pk=order["order_id"]).protection_price == D("999999999999999999.99")


def test_stop_order_waits_unseen_then_triggers_on_a_trade(as_trader, alice, bob):
    stop = as_trader(alice).post("/v1/orders", {"pair": "BTC-USD", "side": "sell", "type": "stop",
                                                "stop_price": "62000", "size": "0.1"}, format="json").json()
    assert stop["status"] == "untriggered"
    assert as_trader(alice).get("/v1/orderbook/BTC-USD").json()["asks"] == []

    as_trader(bob).post("/v1/orders", {**LIMIT_BUY, "price": "61000", "size": "0.5"}, format="json")
    as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "side": "sell", "price": "61000", "size": "0.01"}, format="json")

    stop = as_trader(alice).get(f"/v1/orders/{stop['order_id']}").json()
    assert stop["status"] == "filled" and stop["average_fill_price"] == "61000.00"


def test_the_matchers_line_for_an_order_carries_the_id_of_the_request_that_queued_it(as_trader, alice, caplog):
    caplog.set_level(logging.DEBUG, logger="trading.matcher")
    caplog.handler.addFilter(logs.ContextFilter())
    client = as_trader(alice)
    placed = client.post("/v1/orders", LIMIT_BUY, format="json")
    order_id = placed.json()["order_id"]
    cancelled = client.post(f"/v1/orders/{order_id}/cancel")

    lines = {record.getMessage(): record.request_id for record in caplog.records if record.name == "trading.matcher"}
    new = [message for message in lines if re.fullmatch(rf"BTC-USD: new order {order_id} matched in batch \d+: open", message)]
    cancel = [message for message in lines
              if re.fullmatch(rf"BTC-USD: cancel order {order_id} matched in batch \d+: cancelled", message)]
    assert len(new) == 1 and lines[new[0]] == placed["X-Request-Id"]
    assert len(cancel) == 1 and lines[cancel[0]] == cancelled["X-Request-Id"]
    assert placed["X-Request-Id"] != cancelled["X-Request-Id"]
