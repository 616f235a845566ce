"""The key pages in a real browser (headless Chromium): sign in, create a key, copy its secret from
the page that shows it once, use it, revoke it."""

import re
import shutil

import httpx
import pytest
from django.contrib.auth import get_user_model

from accounts.services import open_account

from .signing import SignedClient

CHROMIUM = shutil.which("chromium")
PASSWORD = "a-long-passw0rd!"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)"),
]


def balances(base_url: str, key_id: str, secret: str) -> httpx.Response:
    headers = SignedClient(key_id, secret).headers("GET", "/v1/account/balances", b"")
    return httpx.get(f"{base_url}/v1/account/balances", headers=headers)


def test_a_holder_creates_a_key_copies_its_secret_once_uses_it_and_revokes_it(live_server, markets):
    from playwright.sync_api import expect, sync_playwright

    open_account(get_user_model().objects.create_user("browser", password=PASSWORD))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
        page = context.new_page()
        page.goto(f"{live_server.url}/account/login/")
        page.fill("#id_username", "browser")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/account/keys/")
        page.click("text=Create a key")
        page.wait_for_url("**/account/keys/new/")
        page.fill("#id_label", "browser bot")
        page.check("input[name=scope][value=read_only]")
        page.click("button:has-text('Create key')")

        secret = page.inner_text("#secret")
        key_id = page.inner_text("code.mono")
        page.click("[data-copy=secret]")
        expect(page.locator("[data-copy=secret]")).to_have_text("Copied")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert f"export HKT_SECRET={secret}" in page.inner_text("#quickstart")
        working = balances(live_server.url, key_id, secret)

        page.click("text=I have saved the secret")
        page.wait_for_url("**/account/keys/")
        expect(page.locator("h1")).to_have_text("API keys")
        listed = page.content()
        page.click("tr:has-text('browser bot') a:has-text('Revoke')")
        page.click("button:has-text('Revoke this key')")
        expect(page.locator("tr.revoked")).to_contain_text("browser bot")
        refused = balances(live_server.url, key_id, secret)
        browser.close()

    assert re.fullmatch(r"[0-9a-f]{64}", secret) and copied == secret
    assert working.status_code == 200
    assert key_id in listed and secret not in listed  # shown once: never on the keys page
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "API_KEY_REVOKED"
