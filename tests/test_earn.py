"""Earn products and subscriptions: GET /v1/earn/products, POST and GET /v1/earn/subscriptions, redeem."""

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from earn.models import MAX_LOCK_DAYS, EarnProduct, Subscription
from earn.subscriptions import SubscriptionRequest, redeem, subscribe
from exchange.errors import ErrorCode
from exchange.fields import to_milliseconds
from trading.audit import audit
from trading.models import LedgerEntry
from trading.signals import balances_changed

from .conftest import balance_of, ledger_snapshot
from .earn_fixtures import at, clock, fund_interest, make_product, subscribed  # noqa: F401 (fixtures)
from .racing import race
from .test_public_api import assert_error

pytestmark = pytest.mark.django_db
PRODUCTS, SUBSCRIPTIONS = "/v1/earn/products", "/v1/earn/subscriptions"


@pytest.fixture
def trader(funded):
    return funded("carol", USD="1000", BTC="2")


@pytest.fixture
def flexible(make_product):
    return make_product("USD", annual_rate="0.05", min_amount="10", capacity="5000")


def written() -> tuple:
    return ledger_snapshot(), Subscription.objects.count()


def redeem_path(subscription_id) -> str:
    return f"{SUBSCRIPTIONS}/{subscription_id}/redeem"


def test_products_are_public_and_show_what_is_left_to_subscribe(api, trader, make_product, flexible):
    locked = make_product("BTC", annual_rate="0.0125", lock_days=30, min_amount="0.001", capacity="1")
    make_product("USD", active=False)
    subscribed(trader, flexible, "250.5")
    subscribe(trader, SubscriptionRequest(locked.pk, Decimal("0.25")))

    response = api.get(PRODUCTS)

    assert response.status_code == 200
    assert response.json() == [
        {"id": locked.pk, "asset": "BTC", "annual_rate": "0.0125", "lock_days": 30, "min_amount": "0.00100000",
         "remaining_capacity": "0.75000000"},
        {"id": flexible.pk, "asset": "USD", "annual_rate": "0.05", "lock_days": 0, "min_amount": "10.00",
         "remaining_capacity": "4749.50"},
    ]


def test_subscribing_moves_spot_available_to_the_earn_wallets_locked_bucket(trader, flexible, make_key):
    bot = make_key(trader)

    response = bot.post(SUBSCRIPTIONS, {"product_id": flexible.pk, "amount": "250.50", "client_subscription_id": "s-1"})

    assert response.status_code == 201, response.json()
    subscription = Subscription.objects.get()
    body = response.json()
    assert body == {"subscription_id": subscription.pk, "client_subscription_id": "s-1", "product_id": flexible.pk,
                    "asset": "USD", "amount": "250.50", "annual_rate": "0.05", "lock_days": 0, "status": "active",
                    "interest": "0.00", "accrued_until": body["accrued_until"], "time": body["time"],
                    "unlocks_at": body["time"], "redeemed_at": None}
    assert body["accrued_until"] > body["time"] and body["accrued_until"] % 86_400_000 == 0  # the next UTC midnight
    spot, earn = balance_of(trader, "USD"), balance_of(trader, "USD", "earn")
    assert (spot.available, spot.locked, earn.available, earn.locked) == (Decimal("749.5"), 0, 0, Decimal("250.5"))
    entries = LedgerEntry.objects.filter(reference=f"earn_subscription:{subscription.pk}")
    assert sorted((e.wallet, e.bucket, e.amount, e.reason) for e in entries) == [
        ("earn", "locked", Decimal("250.5"), "transfer"), ("spot", "available", Decimal("-250.5"), "transfer")]
    assert audit() == []


def test_subscribed_funds_cannot_be_transferred_out_of_earn(trader, flexible, make_key):
    subscribed(trader, flexible, "100")
    before = ledger_snapshot()

    response = make_key(trader).post("/v1/account/transfers", {"asset": "USD", "amount": "1", "from": "earn",
                                                                "to": "spot"})

    assert_error(response, 400, "INSUFFICIENT_FUNDS")
    assert ledger_snapshot() == before


@pytest.mark.parametrize("fields, code, field", [
    ({"amount": "9.99"}, "INVALID_REQUEST", "amount"),  # below the product's minimum
    ({"amount": "10.001"}, "INVALID_REQUEST", "amount"),  # finer than USD's precision
    ({"amount": "0"}, "INVALID_REQUEST", "amount"),
    ({"amount": 10}, "INVALID_REQUEST", "amount"),
    ({"product_id": 999999}, "INVALID_REQUEST", "product_id"),
    ({"product_id": "x"}, "INVALID_REQUEST", "product_id"),
    ({"amount": "1000.01"}, "INSUFFICIENT_FUNDS", None),
    ({"client_subscription_id": "not ok"}, "INVALID_REQUEST", "client_subscription_id"),
])
def test_a_refused_subscription_names_its_reason_and_writes_nothing(trader, flexible, make_key, fields, code, field):
    bot = make_key(trader)
    before = written()

    response = bot.post(SUBSCRIPTIONS, {"product_id": flexible.pk, "amount": "100", **fields})

    assert_error(response, 400, code)
    if field:
        assert field in response.json()["error"]["details"]["fields"]
    assert written() == before


def test_an_inactive_product_takes_no_subscription(trader, make_product, make_key):
    closed = make_product("USD", active=False)
    before = written()

    response = make_key(trader).post(SUBSCRIPTIONS, {"product_id": closed.pk, "amount": "100"})

    assert_error(response, 409, "EARN_PRODUCT_INACTIVE")
    assert response.json()["error"]["details"] == {"product_id": closed.pk}
    assert written() == before


def test_a_subscription_over_the_products_capacity_is_refused(trader, funded, make_product, make_key):
    product = make_product("USD", capacity="500")
    subscribed(funded("dave", USD="400"), product, "400")
    before = written()

    response = make_key(trader).post(SUBSCRIPTIONS, {"product_id": product.pk, "amount": "100.01"})

    assert_error(response, 409, "EARN_CAPACITY_EXCEEDED")
    assert response.json()["error"]["details"] == {"product_id": product.pk, "remaining_capacity": "100.00"}
    assert written() == before
    assert make_key(trader).post(SUBSCRIPTIONS, {"product_id": product.pk, "amount": "100"}).status_code == 201


def test_redeemed_principal_leaves_the_capacity_free_again(trader, make_product):
    product = make_product("USD", capacity="100")
    redeem(trader, subscribed(trader, product, "100").pk)

    assert subscribed(trader, product, "100").amount == 100


def test_read_only_keys_cannot_subscribe_or_redeem_but_can_list(trader, flexible, make_key):
    subscription = subscribed(trader, flexible, "100")
    bot = make_key(trader, scope="read_only")
    before = written()

    assert_error(bot.post(SUBSCRIPTIONS, {"product_id": flexible.pk, "amount": "100"}), 403, "INSUFFICIENT_SCOPE")
    assert_error(bot.post(redeem_path(subscription.pk)), 403, "INSUFFICIENT_SCOPE")

    assert written() == before and Subscription.objects.get().is_active
    assert bot.get(SUBSCRIPTIONS).status_code == 200


def test_unsigned_requests_cannot_subscribe(api, flexible):
    assert_error(api.post(SUBSCRIPTIONS, {"product_id": flexible.pk, "amount": "100"}, format="json"), 401,
                 "MISSING_AUTH_HEADERS")
    assert not Subscription.objects.exists()


def test_a_retry_returns_the_same_subscription_and_another_body_is_refused(trader, flexible, make_key):
    bot = make_key(trader)
    first = bot.post(SUBSCRIPTIONS, {"product_id": flexible.pk, "amount": "100", "client_subscription_id": "again"})
    subscribed(trader, flexible, "900")  # spends the rest: the retry would now be refused on its own

    retry = bot.post(SUBSCRIPTIONS, {"product_id": flexible.pk, "amount": "100.00", "client_subscription_id": "again"})
    before = written()
    reuse = bot.post(SUBSCRIPTIONS, {"product_id": flexible.pk, "amount": "50", "client_subscription_id": "again"})

    assert first.status_code == 201 and retry.status_code == 200 and retry.json() == first.json()
    assert_error(reuse, 409, "DUPLICATE_CLIENT_SUBSCRIPTION_ID")
    assert reuse.json()["error"]["details"] == {"subscription_id": first.json()["subscription_id"]}
    assert written() == before and Subscription.objects.count() == 2


def test_a_flexible_subscription_is_redeemed_back_to_spot_once(trader, flexible, make_key):
    subscription = subscribed(trader, flexible, "250.5")
    bot = make_key(trader)

    response = bot.post(redeem_path(subscription.pk))
    entries = ledger_snapshot()
    again = bot.post(redeem_path(subscription.pk))

    assert response.status_code == again.status_code == 200
    assert response.json()["status"] == "redeemed" and response.json()["redeemed_at"] is not None
    assert again.json() == response.json() and ledger_snapshot() == entries
    spot, earn = balance_of(trader, "USD"), balance_of(trader, "USD", "earn")
    assert (spot.available, earn.available, earn.locked) == (Decimal(1000), 0, 0)
    assert sorted((e.wallet, e.bucket, e.amount) for e in LedgerEntry.objects.filter(
        reference=f"earn_subscription:{subscription.pk}")) == [
        ("earn", "locked", Decimal("-250.5")), ("earn", "locked", Decimal("250.5")),
        ("spot", "available", Decimal("-250.5")), ("spot", "available", Decimal("250.5"))]
    assert audit() == []


def test_the_longest_lock_subscribes_and_a_longer_one_is_never_stored(trader, make_product, as_trader):
    """A lock of millions of days would reach past the year 9999, where no date goes: ten years at most."""
    product = make_product("BTC", lock_days=MAX_LOCK_DAYS, min_amount="0.1")

    made = as_trader(trader).post("/v1/earn/subscriptions", {"product_id": product.pk, "amount": "0.1"}, format="json")

    assert made.status_code == 201 and made.json()["lock_days"] == MAX_LOCK_DAYS
    with pytest.raises(IntegrityError), transaction.atomic():
        EarnProduct.objects.filter(pk=product.pk).update(lock_days=MAX_LOCK_DAYS + 1)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the constraint dropped inside the test's transaction")
def test_the_migration_cuts_a_product_locked_longer_to_the_bound(make_product):
    from importlib import import_module

    from django.apps import apps

    product = make_product("BTC", lock_days=30, min_amount="0.1")
    [bound] = [c for c in EarnProduct._meta.constraints if c.name == "earn_product_lock_at_most_ten_years"]
    with connection.cursor() as cursor:  # the insert's deferred checks done, as a committed row's are
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with connection.schema_editor() as editor:  # as the table was before the migration
        editor.remove_constraint(EarnProduct, bound)
    EarnProduct.objects.filter(pk=product.pk).update(lock_days=MAX_LOCK_DAYS * 10)

    import_module("earn.migrations.0002_cut_longer_product_locks").cut_longer_locks(apps, None)

    product.refresh_from_db()
    assert product.lock_days == MAX_LOCK_DAYS
    with connection.schema_editor() as editor:
        editor.add_constraint(EarnProduct, bound)


def test_a_locked_subscription_cannot_be_redeemed_before_it_unlocks(trader, make_product, as_trader, clock):
    clock.set(at(1, hour=9))
    product = make_product("BTC", lock_days=30, min_amount="0.1")
    subscription = subscribed(trader, product, "1")
    client = as_trader(trader)  # a session: the clock moves beyond a signature's window
    clock.set(at(31, hour=8))
    before = written()

    early = client.post(redeem_path(subscription.pk))

    assert_error(early, 409, "SUBSCRIPTION_LOCKED")
    assert early.json()["error"]["details"] == {"subscription_id": subscription.pk,
                                                "unlocks_at": to_milliseconds(subscription.unlocks_at)}
    assert at(31, hour=9) <= subscription.unlocks_at < at(31, hour=10)
    assert written() == before and Subscription.objects.get().is_active
    clock.set(at(31, hour=10))
    assert client.post(redeem_path(subscription.pk)).json()["status"] == "redeemed"
    assert balance_of(trader, "BTC").available == 2


def test_a_subscription_keeps_the_term_it_was_made_with_when_its_product_changes(trader, make_product, make_key):
    product = make_product("BTC", lock_days=30, min_amount="0.1")
    subscription = subscribed(trader, product, "1")
    product.lock_days = 0  # an operator makes the product flexible: subscriptions keep their lock
    product.save()
    bot = make_key(trader)

    [shown] = bot.get("/v1/earn/subscriptions").json()["results"]
    refused = bot.post(redeem_path(subscription.pk))

    assert_error(refused, 409, "SUBSCRIPTION_LOCKED")
    assert shown["lock_days"] == 30 and shown["unlocks_at"] - shown["time"] == 30 * 86_400_000
    assert bot.get("/v1/earn/products").json()[0]["lock_days"] == 0


def test_redeeming_what_is_not_yours_is_not_found(trader, funded, flexible, make_key):
    theirs = subscribed(funded("erin", USD="100"), flexible, "100")
    bot = make_key(trader)
    before = written()

    assert_error(bot.post(redeem_path(theirs.pk)), 404, "SUBSCRIPTION_NOT_FOUND")
    assert_error(bot.post(redeem_path(theirs.pk + 1)), 404, "SUBSCRIPTION_NOT_FOUND")
    assert_error(bot.post(redeem_path("abc")), 404, "NOT_FOUND")
    assert written() == before and Subscription.objects.get().is_active


def test_the_list_is_newest_first_paginated_and_filtered(trader, flexible, make_product, make_key):
    btc = make_product("BTC", min_amount="0.1")
    first = subscribed(trader, flexible, "10")
    subscribed(trader, flexible, "20")
    subscribed(trader, btc, "0.5")
    redeem(trader, first.pk)
    bot = make_key(trader, scope="read_only")

    page = bot.get(f"{SUBSCRIPTIONS}?limit=2").json()
    rest = bot.get(page["next"].removeprefix("http://testserver")).json()
    usd = bot.get(f"{SUBSCRIPTIONS}?asset=USD").json()

    assert [(s["asset"], s["amount"]) for s in page["results"]] == [("BTC", "0.50000000"), ("USD", "20.00")]
    assert [(s["amount"], s["status"]) for s in rest["results"]] == [("10.00", "redeemed")] and rest["next"] is None
    assert [s["amount"] for s in usd["results"]] == ["20.00", "10.00"]
    assert_error(bot.get(f"{SUBSCRIPTIONS}?asset=DOGE"), 400, "INVALID_PARAMETER")
    assert_error(bot.get(f"{SUBSCRIPTIONS}?status=active"), 400, "INVALID_PARAMETER")


def test_each_balance_change_is_announced_after_commit(trader, flexible, django_capture_on_commit_callbacks):
    announced = []

    def receiver(sender, account_id, **kwargs):
        announced.append(account_id)

    balances_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            subscription = subscribed(trader, flexible, "100")
            redeem(trader, subscription.pk)
            redeem(trader, subscription.pk)  # nothing moves: nothing announced
    finally:
        balances_changed.disconnect(receiver)

    assert announced == [trader.pk, trader.pk]


def test_the_api_document_lists_the_earn_endpoints_and_their_codes(api):
    paths = api.get("/v1/openapi.json").json()["paths"]

    assert "PERMISSION_DENIED" not in paths["/v1/earn/products"]["get"]["responses"]["403"]["description"]  # public
    create = paths["/v1/earn/subscriptions"]["post"]
    assert {"201", "200", "400", "401", "403", "409"} <= set(create["responses"])
    conflicts = create["responses"]["409"]["description"]
    for code in (ErrorCode.EARN_PRODUCT_INACTIVE, ErrorCode.EARN_CAPACITY_EXCEEDED,
                 ErrorCode.DUPLICATE_CLIENT_SUBSCRIPTION_ID):
        assert code in conflicts
    redeem_op = paths["/v1/earn/subscriptions/{id}/redeem"]["post"]
    assert "SUBSCRIPTION_LOCKED" in redeem_op["responses"]["409"]["description"]
    assert "SUBSCRIPTION_NOT_FOUND" in redeem_op["responses"]["404"]["description"]
    assert paths["/v1/earn/subscriptions"]["get"]["x-rate-limit-weight"] == 5
    assert create["x-rate-limit-weight"] == redeem_op["x-rate-limit-weight"] == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_subscriptions_racing_for_the_last_capacity_make_one(funded, make_product):
    product = make_product("USD", capacity="150")
    traders = [funded(f"racer{n}", USD="100") for n in range(2)]

    def attempt(account):
        try:
            return subscribe(account, SubscriptionRequest(product.pk, Decimal("100")))[0].pk
        except Exception as error:
            return getattr(error, "code", error)

    outcomes = race(attempt, traders)

    assert outcomes.count(ErrorCode.EARN_CAPACITY_EXCEEDED) == 1
    assert Subscription.objects.count() == 1 and audit() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_identical_subscriptions_racing_each_other_make_one(trader, flexible):
    def send(client_subscription_id):
        return subscribe(trader, SubscriptionRequest(flexible.pk, Decimal("10"), client_subscription_id))

    for n in range(4):
        results = race(send, [f"race-{n}"] * 2)
        assert len({subscription.pk for subscription, _ in results}) == 1
        assert sorted(created for _, created in results) == [False, True]

    assert Subscription.objects.count() == 4
    assert balance_of(trader, "USD", "earn").locked == 40 and audit() == []
