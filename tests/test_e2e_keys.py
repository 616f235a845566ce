"""Signed requests against real server processes: shared nonce memory and budgets, and the product
page's curl quick start run as written."""

import json
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from accounts.keys import prehash, sign

from .processes import ROOT, free_port, process_env, running
from .signing import now_ms

pytestmark = pytest.mark.slow
PRODUCT_PAGE = ROOT.parent / "shared" / "seed" / "api-for-developers.txt"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
QUICK_START_TIME = "@2024-05-01 00:00:00"  # the page's X-Api-Timestamp, 1714521600000


def signed_headers(key: dict, method: str, path: str, body: bytes) -> dict:
    timestamp, nonce = str(now_ms()), secrets.token_hex(8)
    return {"X-Api-Key": key["key"], "X-Api-Timestamp": timestamp, "X-Api-Nonce": nonce,
            "X-Api-Signature": sign(key["secret"], prehash(timestamp, nonce, method, path, body)),
            "Content-Type": "application/json"}


def test_a_nonce_replayed_to_another_server_process_is_refused(stack):
    first, second = stack.start_rest(workers=1), stack.start_rest(workers=1)
    key = stack.create_trader("replayer", "USD=1000")
    headers = signed_headers(key, "GET", "/v1/account/balances", b"")

    original = httpx.get(f"{first}/v1/account/balances", headers=headers)
    replayed = httpx.get(f"{second}/v1/account/balances", headers=headers)

    assert original.status_code == 200
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "NONCE_REUSED"


def test_two_server_processes_share_one_budget(stack):
    first, second = stack.start_rest(workers=1), stack.start_rest(workers=1)
    stack.manage("shell", "-c", "from accounts.models import RateTier; RateTier.objects.create(name='tiny', "
                 "weight_per_minute=6)")
    key = stack.create_trader("budgeted", "USD=1000")
    stack.manage("shell", "-c", "from accounts.models import Account, RateTier; Account.objects.filter("
                 f"pk={key['account_id']}).update(rate_tier=RateTier.objects.get(name='tiny'))")

    responses = [httpx.get(f"{base}/v1/time", headers=signed_headers(key, "GET", "/v1/time", b""))
                 for base in [first, second] * 4]

    assert [r.status_code for r in responses] == [200] * 6 + [429] * 2
    assert [r.headers["X-RateLimit-Remaining"] for r in responses[:6]] == ["5", "4", "3", "2", "1", "0"]
    assert 1 <= int(responses[6].headers["Retry-After"]) <= 60


def test_a_key_revoked_in_another_process_is_refused_by_a_server_that_cached_it(stack):
    server = stack.start_rest(workers=1)
    key = stack.create_trader("revoked", "USD=1000")

    def balances():
        return httpx.get(f"{server}/v1/account/balances",
                         headers=signed_headers(key, "GET", "/v1/account/balances", b""))

    assert [balances().status_code for _ in range(2)] == [200, 200]
    stack.manage("shell", "-c", "from accounts.keys import revoke_api_keys; from accounts.models import ApiKey; "
                 f"revoke_api_keys(ApiKey.objects.filter(public_id='{key['key']}'))")
    refused = balances()

    assert refused.status_code == 401 and refused.json()["error"]["code"] == "API_KEY_REVOKED"


def quick_start_command(base_url: str) -> str:
    """The page's curl, as printed there: its line breaks were flattened to ' \\ ' in the text copy."""
    text = PRODUCT_PAGE.read_text()
    command = re.search(r"(curl -X POST .*?-d '[^']*')", text).group(1)
    command = command.replace(" \\ ", " \\\n  ")
    return command.replace("https://api.bitexasia.com", base_url).replace("hkt_sign", "hkt-sign")


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs libfaketime (apt-get install libfaketime; .ci/run does)")
@pytest.mark.skipif(shutil.which("hkt-sign", path=process_env()["PATH"]) is None, reason="hkt-sign not installed")
def test_product_page_quick_start_curl_places_the_order(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clock = {"FAKETIME": QUICK_START_TIME, "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_DONT_RESET": "1"}
    env = process_env(PORT=str(port), EXCHANGE_VAR_DIR=str(tmp_path), DATABASE_URL=None, REDIS_URL=None,
                      EXCHANGE_ADMIN_PASSWORD="quick-start", DJANGO_SETTINGS_MODULE=None,
                      EXCHANGE_ENVIRONMENT="production")  # no simulated traders to fill the order
    with running(["bin/run-local"], {**env, **clock}, tmp_path / "server.log", ready_url=f"{base}/v1/time"):
        created = subprocess.run(
            [sys.executable, "manage.py", "create_trader", "quickstart", "--deposit", "USD=1000", "--outside-sandbox"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        )
        key = json.loads(created.stdout)
        # The page's key allows the most clock drift (60 s): the server's clock started at the page's
        # timestamp when it booted, a few seconds ago.
        subprocess.run([sys.executable, "manage.py", "shell", "-c", "from accounts.models import ApiKey; "
                        f"ApiKey.objects.filter(public_id='{key['key']}').update(drift_tolerance_ms=60000)"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        body = '{ "pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01" }'
        result = subprocess.run(
            ["bash", "-c", quick_start_command(base)], capture_output=True, text=True, timeout=60,
            env={**env, "HKT_KEY": key["key"], "HKT_SECRET": key["secret"], "BODY": body},
        )
        order = json.loads(result.stdout)
        fetched = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             f"from trading.models import Order; print(Order.objects.get(pk={order.get('order_id', 0)}).status)"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )

    assert result.returncode == 0, result.stderr
    assert order["pair"] == "BTC-USD" and order["price"] == "63000.00" and order["size"] == "0.01000000", order
    assert order["status"] == "open"
    assert fetched.stdout.strip().splitlines()[-1] == "open"
