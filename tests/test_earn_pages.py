"""The earn account page (/account/earn/: products, subscribe and redeem forms, subscriptions with
their interest) and the operators' earn admin (products, subscriptions, accruals, the interest
account's balances and the shortfalls that stop accrual)."""

import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.services import interest_account
from earn.interest import accrue_interest
from earn.models import EarnProduct, InterestShortfall, Subscription

from .conftest import balance_of, ledger_snapshot
from .earn_fixtures import at, clock, fund_interest, make_product, subscribed  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
EARN, SUBSCRIBE = "/account/earn/", "/account/earn/subscribe/"


@pytest.fixture
def holder(funded):
    account = funded("holder", USD="1000")
    client = Client()
    client.force_login(account.user)
    return account, client


def redeem_url(subscription) -> str:
    return f"/account/earn/subscriptions/{subscription.pk}/redeem/"


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_page_needs_a_login(client, markets):
    response = client.get(EARN)

    assert response.status_code == 302 and response["Location"].startswith("/account/login/")
    assert client.post(SUBSCRIBE, {"product_id": "1", "amount": "10"}).status_code == 302
    assert not Subscription.objects.exists()


def test_the_page_lists_open_products_and_the_holders_subscriptions_with_their_interest(
        holder, funded, make_product, fund_interest, clock):
    account, client = holder
    clock.set(at(1))
    flexible = make_product("USD", annual_rate="0.0365", capacity="5000")
    make_product("BTC", annual_rate="0.02", lock_days=90, min_amount="0.01")
    make_product("ETH", active=False)
    mine = subscribed(account, flexible, "1000")
    subscribed(funded("other", USD="500"), flexible, "500")
    fund_interest("USD", "10")
    clock.set(at(4))
    accrue_interest()

    page = client.get(EARN)

    assert page.status_code == 200
    text = page.content.decode()
    assert "locked 90 days" in text and "flexible" in text and "ETH" not in text
    assert "3500.00" in text  # capacity left on the USD product
    assert [(subscription.pk, shown["interest"]) for subscription, shown in page.context["subscriptions"]] == [
        (mine.pk, "0.20")]
    assert f'action="{redeem_url(mine)}"' in text
    assert "/account/earn/" in client.get("/account/").content.decode()


def test_subscribing_from_the_page_redirects_back_and_says_so(holder, make_product):
    account, client = holder
    product = make_product("USD", min_amount="10")

    response = client.post(SUBSCRIBE, {"product_id": str(product.pk), "amount": "250.50"}, follow=True)

    assert response.redirect_chain == [(EARN, 302)]
    subscription = Subscription.objects.get()
    assert (subscription.account, subscription.amount) == (account, Decimal("250.5"))
    assert messages_of(response) == [f"Subscribed 250.50 USD (subscription {subscription.pk})."]
    assert balance_of(account, "USD", "earn").locked == Decimal("250.5")


def test_a_subscribe_form_sent_twice_subscribes_once(holder, make_product):
    """A double click: the page's form carries a client_subscription_id of its own."""
    account, client = holder
    product = make_product("USD", min_amount="10")
    page = client.get(EARN).content.decode()
    [form_id] = re.findall(r'name="client_subscription_id" value="([A-Za-z0-9_-]+)"', page)
    sent = {"product_id": str(product.pk), "amount": "100", "client_subscription_id": form_id}

    first, again = (client.post(SUBSCRIBE, sent, follow=True) for _ in range(2))

    subscription = Subscription.objects.get()
    assert messages_of(again) == [
        f"Subscribed 100.00 USD (subscription {subscription.pk}), once: the form was sent again."]
    assert messages_of(first) == [f"Subscribed 100.00 USD (subscription {subscription.pk})."]
    assert balance_of(account, "USD", "earn").locked == 100
    assert form_id not in client.get(EARN).content.decode()  # the next page's form is a new one


@pytest.mark.parametrize("amount, says", [
    ("9.99", "amount: Must be at least the product's minimum 10.00."),
    ("1e3", "amount: Must be a plain non-negative decimal"),
    ("1000.01", "Insufficient USD: this needs 0.01 more than the available balance."),
])
def test_a_refused_subscription_redirects_back_with_the_reason_and_writes_nothing(holder, make_product, amount, says):
    account, client = holder
    product = make_product("USD", min_amount="10")
    before = ledger_snapshot()

    response = client.post(SUBSCRIBE, {"product_id": str(product.pk), "amount": amount}, follow=True)

    assert response.redirect_chain == [(EARN, 302)]
    assert messages_of(response)[0].startswith("Not subscribed: " + says)
    assert ledger_snapshot() == before and not Subscription.objects.exists()


def test_redeeming_from_the_page_and_a_locked_refusal(holder, make_product, clock):
    account, client = holder
    clock.set(at(1))
    flexible = subscribed(account, make_product("USD"), "100")
    locked = subscribed(account, make_product("USD", lock_days=7), "100")

    refused = client.post(redeem_url(locked), follow=True)
    redeemed = client.post(redeem_url(flexible), follow=True)

    assert refused.redirect_chain == redeemed.redirect_chain == [(EARN, 302)]
    assert messages_of(refused)[0].startswith(f"Not redeemed: Subscription {locked.pk} is locked until")
    assert messages_of(redeemed) == [f"Subscription {flexible.pk} redeemed: 100.00 USD is back in your spot wallet."]
    assert Subscription.objects.get(pk=locked.pk).is_active and not Subscription.objects.get(pk=flexible.pk).is_active
    assert "locked until 2026-03-08" in redeemed.content.decode()
    assert balance_of(account, "USD").available == 900
    clock.set(at(1, hour=11))
    again = client.post(redeem_url(flexible), follow=True)  # a double click
    assert messages_of(again) == [f"Subscription {flexible.pk} was redeemed already."]
    assert balance_of(account, "USD").available == 900


def test_someone_elses_subscription_cannot_be_redeemed_from_the_page(holder, funded, make_product):
    _, client = holder
    theirs = subscribed(funded("other", USD="100"), make_product("USD"), "100")

    response = client.post(redeem_url(theirs), follow=True)

    assert messages_of(response) == [f"Not redeemed: No earn subscription {theirs.pk} on this account."]
    assert Subscription.objects.get().is_active


def test_a_login_without_a_trading_account_is_told_so(admin_client, make_product):
    product = make_product("USD")

    page = admin_client.get(EARN)
    response = admin_client.post(SUBSCRIBE, {"product_id": str(product.pk), "amount": "100"}, follow=True)

    assert "This login has no trading account." in page.content.decode()
    assert messages_of(response) == ["Not subscribed: This login has no trading account."]
    assert not Subscription.objects.exists()


def test_operators_define_products_in_the_admin(admin_client, markets):
    fields = {"asset": "", "annual_rate": "0.045", "lock_days": "30", "min_amount": "0.001", "capacity": "5",
              "active": "on"}
    btc = str(markets["BTC-USD"].base_id)

    too_fine = admin_client.post("/admin/earn/earnproduct/add/", {**fields, "asset": btc, "min_amount": "0.000000001"})
    too_long = admin_client.post("/admin/earn/earnproduct/add/", {**fields, "asset": btc, "lock_days": "3651"})
    too_high = admin_client.post("/admin/earn/earnproduct/add/", {**fields, "asset": btc, "annual_rate": "10.01"})
    added = admin_client.post("/admin/earn/earnproduct/add/", {**fields, "asset": btc})

    assert too_fine.status_code == 200 and "At most 8 decimal places for BTC." in too_fine.content.decode()
    assert too_long.status_code == 200 and "less than or equal to 3650" in too_long.content.decode()
    assert too_high.status_code == 200 and "less than or equal to 10" in too_high.content.decode()
    assert added.status_code == 302
    product = EarnProduct.objects.get()
    assert (product.asset.symbol, product.annual_rate, product.lock_days, product.capacity) == (
        "BTC", Decimal("0.045"), 30, 5)
    assert admin_client.get("/admin/earn/earnproduct/").status_code == 200


def test_the_admin_shows_subscriptions_accruals_and_shortfalls_read_only(admin_client, holder, make_product,
                                                                         fund_interest, clock):
    account, _ = holder
    clock.set(at(1))
    subscription = subscribed(account, make_product("USD", annual_rate="0.0365"), "1000")
    fund_interest("USD", "0.15")
    clock.set(at(5))
    accrue_interest()  # pays day 2, stops at day 3

    for model in ("subscription", "interestaccrual", "interestshortfall", "interestaccountbalance"):
        assert admin_client.get(f"/admin/earn/{model}/").status_code == 200, model
    assert admin_client.get("/admin/earn/subscription/add/").status_code == 403
    assert admin_client.post(f"/admin/earn/subscription/{subscription.pk}/delete/", {"post": "yes"}).status_code == 403
    shortfalls = admin_client.get("/admin/earn/interestshortfall/?resolved=no").content.decode()
    assert "March 3, 2026" in shortfalls
    assert InterestShortfall.objects.filter(resolved_at__isnull=True).count() == 1


def test_the_admin_shows_the_interest_account_balance_and_funds_it_through_the_ledger(admin_client, fund_interest):
    fund_interest("USD", "123.45")

    listed = admin_client.get("/admin/earn/interestaccountbalance/")
    fund_link = f"/admin/trading/balance/adjust/?account={interest_account().pk}&amp;wallet=spot"
    funded = admin_client.post("/admin/trading/balance/adjust/", {
        "account": interest_account().pk, "asset": "USD", "wallet": "spot", "amount": "100", "memo": "June"})

    assert "123.45" in listed.content.decode() and fund_link in listed.content.decode()
    assert funded.status_code == 302
    assert balance_of(interest_account(), "USD").available == Decimal("223.45")
