"""The sandbox started the README's way (bin/run-local, which `make run` runs): a newcomer signs up on
the web, creates a key, pastes the key page's quick start, and the order comes back; the demo key and
quick start the start prints work as printed; and stopping the script stops everything it started."""

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess

import httpx
import pytest

from .processes import form_post, free_port, process_env, running, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("hkt-sign", path=process_env()["PATH"]) is None, reason="hkt-sign not installed"),
]
PASSWORD = "a-long-passw0rd!"
QUICK_START = re.compile(r'<pre id="quickstart">(.*?)</pre>', re.DOTALL)


def json_documents(text: str) -> list:
    """The JSON bodies curl printed one after the other."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while text[position:].strip():
        document, position = decoder.raw_decode(text, text.index(text[position:].strip()[0], position))
        documents.append(document)
    return documents


def run_quick_start(script: str, env: dict) -> tuple[dict, dict]:
    """Paste the quick start into bash: (balances, order) as the server answered them."""
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    balances, order = json_documents(result.stdout)
    return balances, order


def assert_order_came_back(order: dict) -> None:
    assert order["pair"] == "BTC-USD" and order["side"] == "buy" and order["price"] == "60000.00", order
    assert order["size"] == "0.01000000" and order["status"] in {"open", "filled", "partially_filled"}, order


@pytest.fixture(scope="module")
def sandbox_server(tmp_path_factory):
    """bin/run-local with the embedded default and no EXCHANGE_ENVIRONMENT: the sandbox, as `make run`.
    One start for the module, whose last test stops it."""
    tmp_path = tmp_path_factory.mktemp("sandbox")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = process_env(PORT=str(port), EXCHANGE_VAR_DIR=str(tmp_path), DATABASE_URL=None, REDIS_URL=None,
                      EXCHANGE_ENVIRONMENT=None, EXCHANGE_ADMIN_PASSWORD="sandbox-start", DJANGO_SETTINGS_MODULE=None)
    log = tmp_path / "run-local.log"
    with running(["bin/run-local"], env, log, ready_url=f"{base}/v1/time") as process:
        yield base, env, log, process


def test_the_key_pages_quick_start_places_the_order_on_a_fresh_sandbox(sandbox_server):
    base, env, _, _ = sandbox_server
    with httpx.Client(base_url=base, timeout=10) as browser:
        signed_up = form_post(browser, "/account/signup/", {"username": "newcomer", "email": "n@example.com",
                                                            "password1": PASSWORD, "password2": PASSWORD})
        assert signed_up.status_code == 200 and 'id="sandbox-banner"' in signed_up.text
        created = form_post(browser, "/account/keys/new/", {"label": "my bot", "scope": "trade", "ip_allowlist": "",
                                                            "drift_tolerance_ms": "5000"})
    assert created.status_code == 200, created.text
    script = html.unescape(QUICK_START.search(created.text).group(1))
    assert f"curl -X POST {base}/v1/orders" in script

    balances, order = run_quick_start(script, env)

    # The starting balance, through the ledger, is there before the order and pays for it.
    usd = next(b for b in balances["balances"] if b["asset"] == "USD")
    assert usd["spot"]["available"] == "10000.00", balances
    assert_order_came_back(order)


def test_the_printed_demo_key_and_quick_start_work_and_stopping_stops_everything(sandbox_server):
    base, env, log, process = sandbox_server
    printed = log.read_text()
    script = printed[printed.index("export PATH="):printed.index("Serving the SANDBOX")]
    assert f"Serving the SANDBOX on {base}/" in printed
    assert "demo" in printed and "export HKT_SECRET=" in script

    _, order = run_quick_start(script, env)

    assert_order_came_back(order)
    wait_until(lambda: "Simulating" in log.read_text(), timeout=30, what="the simulated traders to start")
    # Ctrl-C reaches the script (its background children ignore SIGINT): its trap stops them all, the
    # simulation first and cleanly.
    os.kill(process.pid, signal.SIGINT)
    process.wait(timeout=30)
    wait_until(lambda: not group_alive(process.pid), timeout=15, what="every process of the start to end")
    assert "Stopped after" in log.read_text()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_a_start_on_a_taken_port_says_so_and_sets_nothing_up(tmp_path):
    """A second `make run` while the first serves: refused before it migrates, seeds or answers for the other."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = process_env(PORT=str(port), EXCHANGE_VAR_DIR=str(tmp_path), DATABASE_URL=None, REDIS_URL=None,
                          EXCHANGE_ENVIRONMENT=None, DJANGO_SETTINGS_MODULE=None)
        started = subprocess.run(["bin/run-local"], env=env, capture_output=True, text=True, timeout=60)

    assert started.returncode == 1
    assert f"http://127.0.0.1:{port} is taken" in started.stderr
    assert list(tmp_path.iterdir()) == []  # no database made

