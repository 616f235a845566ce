"""The README's run command, over real HTTP."""

import httpx
import pytest

from .processes import free_port, process_env, running

pytestmark = pytest.mark.slow


def test_run_local_serves_markets_and_admin_over_http(tmp_path):
    port = free_port()
    env = process_env(
        PORT=str(port), EXCHANGE_VAR_DIR=str(tmp_path), EXCHANGE_ADMIN_PASSWORD="smoke-test-password",
        DATABASE_URL=None, REDIS_URL=None, DJANGO_SETTINGS_MODULE=None,
    )
    base = f"http://127.0.0.1:{port}"

    with running(["bin/run-local"], env, tmp_path / "server.log", ready_url=f"{base}/v1/time"):
        markets = httpx.get(f"{base}/v1/markets", timeout=10)
        admin_login = httpx.get(f"{base}/admin/login/", timeout=10)
        admin_css = httpx.get(f"{base}/static/admin/css/base.css", timeout=10)

    assert markets.status_code == 200
    assert {m["pair"] for m in markets.json()} == {"BTC-USD", "ETH-USD", "ETH-BTC"}
    assert admin_login.status_code == 200
    assert admin_css.status_code == 200
    log = (tmp_path / "server.log").read_text()
    assert "Operator login: operator / smoke-test-password" in log
    assert (tmp_path / "exchange.sqlite3").exists()
