"""Every page is served with the Content-Security-Policy of exchange/security.py, and none of them holds
what that policy would refuse to run: an inline script, a style element or attribute, an event handler
attribute. A real browser's word on it is in the browser tests (tests/csp.py)."""

import re
import shutil
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.keys import create_api_key
from accounts.models import ApiKey
from earn.models import EarnProduct
from exchange.security import CONTENT_SECURITY_POLICY
from trading.models import Asset, Market

from .csp import csp_violations, watch_csp

CHROMIUM = shutil.which("chromium")
PASSWORD = "a-long-passw0rd!"
# A script element that would run: no src, and not a data block (json_script's application/json).
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=|\son[a-z]+=", re.IGNORECASE)


def pages(key: ApiKey, market: Market) -> list[str]:
    return ["/", f"/markets/{market.pair}", "/account/", "/account/keys/", "/account/keys/new/",
            f"/account/keys/{key.pk}/edit/", f"/account/keys/{key.pk}/revoke/", "/account/password/",
            "/account/wallets/", "/account/wallets/ledger/", "/account/wallets/addresses/",
            "/account/wallets/addresses/new/", "/account/wallets/withdrawals/", "/account/earn/", "/v1/docs",
            "/admin/", "/admin/trading/market/", f"/admin/trading/market/{market.pk}/change/",
            "/admin/accounts/account/", "/admin/accounts/apikey/", "/admin/wallets/withdrawal/",
            "/admin/trading/balance/", "/admin/trading/balance/adjust/", "/admin/trading/auditrun/",
            "/admin/trading/slowrequest/", "/admin/earn/interestaccountbalance/", "/admin/earn/earnproduct/add/"]


@pytest.fixture
def operator(markets, settings):
    settings.EXCHANGE_ENVIRONMENT = "sandbox"  # the banner on every page too
    user = get_user_model().objects.create_superuser("operator")
    from accounts.services import open_account

    account = open_account(user)
    key, _ = create_api_key(account, label="bot", scope="trade", ip_allowlist=[])
    EarnProduct.objects.create(asset=Asset.objects.get(symbol="USD"), annual_rate=Decimal("0.05"), lock_days=0,
                               min_amount=Decimal(10), capacity=Decimal(10000))
    client = Client()
    client.force_login(user)
    return client, key


def test_every_page_has_the_policy_and_nothing_inline_that_it_would_refuse(operator, markets):
    client, key = operator
    for path in pages(key, markets["BTC-USD"]) + ["/account/login/", "/account/signup/", "/admin/login/"]:
        response = (client if not path.endswith("login/") and path != "/account/signup/" else Client()).get(path)
        assert response.status_code == 200, path
        assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        html = response.content.decode()
        assert INLINE_SCRIPT.findall(html) == [], path
        assert INLINE_STYLE.findall(html) == [], path


def test_the_docs_start_up_script_is_a_file_of_its_own_never_cached(client, markets):
    page = client.get("/v1/docs").content.decode()
    script = client.get("/v1/docs.js")

    assert '<script src="/v1/docs.js"></script>' in page
    assert script["Content-Type"] == "application/javascript"
    assert "no-store" in script["Cache-Control"] and "private" in script["Cache-Control"]
    assert script["Cross-Origin-Resource-Policy"] == "same-origin"
    assert 'url: "/v1/openapi.json"' in script.content.decode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")
def test_a_browser_reports_no_violation_on_the_account_pages_and_the_admin(live_server, markets, settings):
    from playwright.sync_api import sync_playwright

    settings.EXCHANGE_ENVIRONMENT = "sandbox"
    user = get_user_model().objects.create_superuser("operator", password=PASSWORD)
    from accounts.services import open_account

    key, _ = create_api_key(open_account(user), label="bot", scope="trade", ip_allowlist=[])
    visited = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        watch_csp(page)
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")  # the admin's log-in signs in the site too
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        for path in pages(key, markets["BTC-USD"]):
            page.goto(f"{live_server.url}{path}")
            page.wait_for_load_state("networkidle")
            visited[path] = csp_violations(page)
        browser.close()

    assert {path: violations for path, violations in visited.items() if violations} == {}


def test_error_pages_are_the_sites_own_with_the_banner_and_nothing_inline(operator, settings):
    """A missing page, a form sent without its CSRF token (left open in another tab across a log-in) and a
    server error: the site's page, not Django's stock one, whose inline style the policy refuses."""
    from django.test import RequestFactory

    from exchange.errors import server_error_view

    missing = Client().get("/no-such-page/")
    expired = Client(enforce_csrf_checks=True).post("/account/login/", {"username": "u", "password": "p"})
    try:
        raise RuntimeError("a failure outside any view")
    except RuntimeError:
        failed = server_error_view(RequestFactory().get("/markets/BTC-USD"))

    for response, status, title in ((missing, 404, "Not found"), (expired, 403, "This form has expired"),
                                    (failed, 500, "Something went wrong")):
        html = response.content.decode()
        assert response.status_code == status
        assert f"<h1>{title}</h1>" in html and 'id="sandbox-banner"' in html
        assert INLINE_SCRIPT.findall(html) == [] and INLINE_STYLE.findall(html) == []
    assert missing["Content-Security-Policy"] == expired["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
