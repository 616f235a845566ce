"""The balances page (/account/wallets/) and the recent ledger page (/account/wallets/ledger/)."""

import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from trading import dispatch, services
from trading.orders import OrderRequest
from wallets.transfers import TransferRequest, make_transfer

pytestmark = pytest.mark.django_db
BALANCES = "/account/wallets/"
LEDGER = "/account/wallets/ledger/"


def logged_in(client, account):
    client.force_login(account.user)
    return client


def wallet_rows(html: str) -> dict[str, dict[str, tuple[str, str, str]]]:
    """{wallet: {asset: (available, locked, total)}} as the page shows them."""
    shown = {}
    for wallet, table in re.findall(r'<h2 id="(\w+)">.*?<tbody>(.*?)</tbody>', html, re.S):
        rows = re.findall(r'<tr><td>(\w+)</td><td class="mono">([\d.]+)</td><td class="mono">([\d.]+)</td>'
                          r'<td class="mono">([\d.]+)</td></tr>', table)
        shown[wallet] = {asset: tuple(numbers) for asset, *numbers in rows}
    return shown


@pytest.fixture
def carol(funded):
    """Carol with funds in all three wallets and an order holding part of her spot USD."""
    carol = funded("carol", USD="1000", BTC="2")
    make_transfer(carol, TransferRequest("USD", Decimal("250.50"), "spot", "margin"))
    make_transfer(carol, TransferRequest("BTC", Decimal("0.5"), "spot", "earn"))
    services.place_order(carol, OrderRequest("BTC-USD", "buy", "limit", price=Decimal("10000"), size=Decimal("0.01")))
    dispatch.matcher_for("BTC-USD").drain()
    return carol


@pytest.mark.parametrize("path", [BALANCES, LEDGER])
def test_the_pages_need_a_login(client, markets, path):
    response = client.get(path)

    assert response.status_code == 302 and response["Location"] == f"/account/login/?next={path}"


def test_balances_are_shown_by_wallet_and_asset_available_and_locked(client, carol, funded):
    funded("dave", USD="777777")  # someone else's balance is not shown

    response = logged_in(client, carol).get(BALANCES)

    assert response.status_code == 200
    html = response.content.decode()
    assert wallet_rows(html) == {
        "spot": {"BTC": ("1.50000000", "0.00000000", "1.50000000"), "ETH": ("0.00000000", "0.00000000", "0.00000000"),
                 "USD": ("649.50", "100.00", "749.50")},
        "margin": {"BTC": ("0.00000000", "0.00000000", "0.00000000"),
                   "ETH": ("0.00000000", "0.00000000", "0.00000000"), "USD": ("250.50", "0.00", "250.50")},
        "earn": {"BTC": ("0.50000000", "0.00000000", "0.50000000"), "ETH": ("0.00000000", "0.00000000", "0.00000000"),
                 "USD": ("0.00", "0.00", "0.00")},
    }
    assert "777777" not in html and 'href="/account/wallets/ledger/"' in html


def test_the_ledger_page_shows_recent_entries_with_the_balance_after_each(client, carol, as_trader):
    api_entries = as_trader(carol).get("/v1/account/ledger").json()["results"]

    response = logged_in(client, carol).get(LEDGER)

    assert response.status_code == 200
    rows = re.findall(r"<tr>\s*<td>[^<]+</td>\s*<td>(\w+)</td>\s*<td>(\w+)</td>\s*<td>(\w+)</td>\s*<td>(\w+)</td>\s*"
                      r'<td class="mono">(-?[\d.]+)</td>\s*<td class="mono">([\d.]+)</td>', response.content.decode())
    assert rows == [(e["asset"], e["wallet"], e["bucket"], e["kind"], e["amount"], e["balance_after"])
                    for e in api_entries]
    assert ("USD", "spot", "locked", "order_hold", "100.00", "100.00") in rows


def test_a_login_without_a_trading_account_sees_no_balances(client, markets):
    operator = get_user_model().objects.create_user("operator", is_staff=True)
    client.force_login(operator)

    for path in (BALANCES, LEDGER):
        response = client.get(path)
        assert response.status_code == 200 and b"This login has no trading account." in response.content


def test_the_account_overview_links_the_balances(client, carol):
    html = logged_in(client, carol).get("/account/").content.decode()

    assert 'href="/account/wallets/"' in html and 'href="/account/wallets/ledger/"' in html
