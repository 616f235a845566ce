"""The README's run command, over real HTTP."""

import subprocess

import httpx
import pytest

from .processes import ROOT, free_port, process_env, running, wait_until

pytestmark = pytest.mark.slow


def test_run_local_serves_markets_and_admin_over_http(tmp_path):
    """On an address of the HOST asked for (127.0.0.2: another than the default), the sandbox's simulated
    traders started against it."""
    port = free_port()
    env = process_env(
        HOST="127.0.0.2", PORT=str(port), EXCHANGE_VAR_DIR=str(tmp_path),
        EXCHANGE_ADMIN_PASSWORD="smoke-test-password", DATABASE_URL=None, REDIS_URL=None, DJANGO_SETTINGS_MODULE=None,
    )
    base = f"http://127.0.0.2:{port}"
    log_file = tmp_path / "server.log"

    with running(["bin/run-local"], env, log_file, ready_url=f"{base}/v1/time"):
        markets = httpx.get(f"{base}/v1/markets", timeout=10)
        admin_login = httpx.get(f"{base}/admin/login/", timeout=10)
        admin_css = httpx.get(f"{base}/static/admin/css/base.css", timeout=10)
        wait_until(lambda: "Simulating" in log_file.read_text(), timeout=60, what="the simulated traders' start")

    assert markets.status_code == 200
    assert {m["pair"] for m in markets.json()} == {"BTC-USD", "ETH-USD", "ETH-BTC"}
    assert admin_login.status_code == 200
    assert admin_css.status_code == 200
    log = log_file.read_text()
    assert "Operator login: operator / smoke-test-password" in log
    assert f"Simulating BTC-USD, ETH-BTC, ETH-USD against {base}" in log
    assert (tmp_path / "exchange.sqlite3").exists() and (tmp_path / "environment").read_text() == "sandbox\n"


def test_run_local_refuses_to_serve_one_environment_from_the_var_the_other_used(tmp_path):
    (tmp_path / "environment").write_text("sandbox\n")  # a make run of the sandbox made this var/
    env = process_env(EXCHANGE_ENVIRONMENT="production", PORT=str(free_port()), EXCHANGE_VAR_DIR=str(tmp_path),
                      DATABASE_URL=None, REDIS_URL=None, DJANGO_SETTINGS_MODULE=None)

    result = subprocess.run(["bin/run-local"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                            check=False)

    assert result.returncode == 1
    assert f"{tmp_path}/ holds the sandbox's database; EXCHANGE_VAR_DIR=var/production serves the production" in (
        result.stderr)
    assert not (tmp_path / "exchange.sqlite3").exists()  # refused before anything is migrated
