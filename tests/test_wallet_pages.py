"""The account pages of withdrawals: the address book (list, add with the password, remove) and the
withdrawals list with its cancel button."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from accounts.services import open_account
from trading.models import Asset
from wallets.models import Withdrawal, WithdrawalAddress
from wallets.withdrawals import WithdrawalRequest, add_address, approve_withdrawal, request_withdrawal

from .conftest import balance_of

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-passw0rd!"
ADDRESSES, ADD = "/account/wallets/addresses/", "/account/wallets/addresses/new/"
WITHDRAWALS = "/account/wallets/withdrawals/"
ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


@pytest.fixture
def holder(fund):
    """A logged-in account holder with a password (the address book asks for it again) and 1 BTC."""
    user = get_user_model().objects.create_user("holder", password=PASSWORD)
    client = Client()
    assert client.login(username="holder", password=PASSWORD)
    account = open_account(user)
    fund(account, "BTC", "1")
    return account, client


def remove_url(entry) -> str:
    return f"/account/wallets/addresses/{entry.pk}/remove/"


def cancel_url(withdrawal) -> str:
    return f"/account/wallets/withdrawals/{withdrawal.pk}/cancel/"


def test_adding_an_address_asks_the_password_and_shows_when_it_becomes_usable(holder, settings):
    account, client = holder
    settings.WITHDRAWAL_ADDRESS_WAITING_PERIOD = timedelta(hours=24)

    refused = client.post(ADD, {"asset": "BTC", "address": ADDRESS, "label": "cold", "password": "wrong"})
    missing = client.post(ADD, {"asset": "BTC", "address": ADDRESS, "label": "cold"})

    assert refused.status_code == missing.status_code == 200
    assert refused.context["form"].errors["password"] == ["That is not your password."]
    assert missing.context["form"].errors["password"]
    assert not WithdrawalAddress.objects.exists()

    added = client.post(ADD, {"asset": "BTC", "address": ADDRESS, "label": "cold", "password": PASSWORD}, follow=True)

    entry = WithdrawalAddress.objects.get()
    assert added.redirect_chain == [(ADDRESSES, 302)]
    assert (entry.account, entry.asset.symbol, entry.address, entry.label) == (account, "BTC", ADDRESS, "cold")
    assert entry.usable_from - entry.created_at == timedelta(hours=24)
    usable_from = f"{entry.usable_from:%Y-%m-%d %H:%M} UTC"
    page = added.content.decode()
    assert f"from {usable_from}" in page and ADDRESS in page  # in the message and in the table
    assert "usable</span>" not in page


def test_an_address_past_its_waiting_period_is_shown_usable(holder):
    account, client = holder
    entry = add_address(account, Asset.objects.get(symbol="BTC"), ADDRESS)
    WithdrawalAddress.objects.filter(pk=entry.pk).update(usable_from=timezone.now())

    page = client.get(ADDRESSES).content.decode()

    assert ">usable</span>" in page


@pytest.mark.parametrize("fields, field", [
    ({"address": "has space"}, "address"), ({"address": ""}, "address"), ({"asset": "DOGE"}, "asset"),
    ({"address": "x" * 129}, "address"),
])
def test_a_bad_address_is_refused_on_its_field(holder, fields, field):
    _, client = holder

    response = client.post(ADD, {"asset": "BTC", "address": ADDRESS, "password": PASSWORD, **fields})

    assert response.status_code == 200 and response.context["form"].errors[field]
    assert not WithdrawalAddress.objects.exists()


def test_the_same_address_twice_is_refused(holder):
    account, client = holder
    add_address(account, Asset.objects.get(symbol="BTC"), ADDRESS)

    response = client.post(ADD, {"asset": "BTC", "address": ADDRESS, "password": PASSWORD})

    assert "Already in your BTC address book." in response.context["form"].errors["address"]
    assert WithdrawalAddress.objects.count() == 1


def test_removing_an_address_confirms_then_removes(holder):
    account, client = holder
    entry = add_address(account, Asset.objects.get(symbol="BTC"), ADDRESS)

    confirm = client.get(remove_url(entry))
    removed = client.post(remove_url(entry))

    assert confirm.status_code == 200 and ADDRESS in confirm.content.decode()
    assert removed.status_code == 302 and removed["Location"] == ADDRESSES
    assert not WithdrawalAddress.objects.exists()


def test_another_holders_address_and_withdrawal_are_not_found(holder, funded, settings):
    settings.WITHDRAWAL_ADDRESS_WAITING_PERIOD = timedelta(0)
    other = funded("other", BTC="1")
    entry = add_address(other, Asset.objects.get(symbol="BTC"), ADDRESS)
    withdrawal, _ = request_withdrawal(other, WithdrawalRequest("BTC", Decimal("0.5"), ADDRESS))
    _, client = holder

    assert client.get(remove_url(entry)).status_code == 404
    assert client.post(remove_url(entry)).status_code == 404
    assert client.post(cancel_url(withdrawal)).status_code == 404
    assert ADDRESS not in client.get(ADDRESSES).content.decode()
    assert ADDRESS not in client.get(WITHDRAWALS).content.decode()
    assert WithdrawalAddress.objects.count() == 1 and Withdrawal.objects.get().status == "pending_review"


def test_the_withdrawals_page_shows_each_state_and_cancels_a_pending_one(holder, settings):
    settings.WITHDRAWAL_ADDRESS_WAITING_PERIOD = timedelta(0)
    account, client = holder
    add_address(account, Asset.objects.get(symbol="BTC"), ADDRESS)
    pending, _ = request_withdrawal(account, WithdrawalRequest("BTC", Decimal("0.25"), ADDRESS))
    approved, _ = request_withdrawal(account, WithdrawalRequest("BTC", Decimal("0.5"), ADDRESS))
    approve_withdrawal(approved.pk, "op")

    page = client.get(WITHDRAWALS).content.decode()

    assert "0.25000000" in page and "0.50000000" in page
    assert "Pending Review" in page and "Approved" in page
    assert page.count('type="submit">Cancel</button>') == 1 and cancel_url(pending) in page

    cancelled = client.post(cancel_url(pending), follow=True)
    refused = client.post(cancel_url(approved), follow=True)

    assert "cancelled" in cancelled.content.decode()
    assert "only a withdrawal pending review can be cancelled" in refused.content.decode()
    assert [w.status for w in Withdrawal.objects.order_by("pk")] == ["cancelled", "approved"]
    assert balance_of(account, "BTC").available == Decimal("0.5")
    assert client.get(cancel_url(pending)).status_code == 405  # a change is a POST


@pytest.mark.parametrize("path", [ADDRESSES, ADD, WITHDRAWALS])
def test_the_pages_need_a_login(db, path):
    response = Client().get(path)

    assert response.status_code == 302 and response["Location"].startswith("/account/login/")


def test_a_post_without_the_csrf_token_is_refused(holder):
    account, _ = holder
    client = Client(enforce_csrf_checks=True)
    client.force_login(account.user)

    response = client.post(ADD, {"asset": "BTC", "address": ADDRESS, "password": PASSWORD})

    assert response.status_code == 403 and not WithdrawalAddress.objects.exists()


def test_the_account_home_links_the_pages(holder):
    _, client = holder

    page = client.get("/account/").content.decode()

    assert f'href="{WITHDRAWALS}"' in page and f'href="{ADDRESSES}"' in page
