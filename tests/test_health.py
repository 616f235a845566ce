"""/healthz and /readyz (exchange/health.py, trading/lag.py): in process on both stacks, and on the production
processes with a pair's matcher stopped and started again."""

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.test import Client
from django.utils import timezone
from hkt_client import Client as BotClient

from exchange import redis as exchange_redis
from trading import dispatch, services
from trading.models import Market, MatcherCommand
from trading.orders import OrderRequest

from .processes import wait_until
from .stack import Stack

POD_ADDRESS = "10.244.0.7:8001"  # how a Kubernetes probe names the host: in no ALLOWED_HOSTS


def test_healthz_is_alive_whatever_the_host_and_reads_nothing(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz", HTTP_HOST=POD_ADDRESS)
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert response["X-Request-Id"]


def test_readyz_is_ready_when_every_dependency_answers(markets, settings):
    response = Client().get("/readyz", HTTP_HOST=POD_ADDRESS)
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "failed": [], "checks": {name: "ok" for name in
                                                                          settings.READINESS_CHECKS}}
    assert Client().head("/readyz", HTTP_HOST=POD_ADDRESS).status_code == 200


def test_probes_are_not_rate_limited_nor_redirected_to_https(markets, settings):
    settings.PUBLIC_WEIGHT_PER_MINUTE = 1
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    for _ in range(3):
        for path in ("/healthz", "/readyz"):
            response = client.get(path, HTTP_HOST=POD_ADDRESS)
            assert response.status_code == 200
            assert "X-RateLimit-Limit" not in response


@pytest.fixture
def queued_order(alice, django_capture_on_commit_callbacks):
    """An order accepted on BTC-USD whose matcher has not run (its wake-up after the commit is not run)."""
    with django_capture_on_commit_callbacks(execute=False):
        order, _ = services.place_order(alice, OrderRequest(pair="BTC-USD", side="buy", type="limit",
                                                            price=Decimal("100"), size=Decimal("0.01")))
    assert MatcherCommand.objects.filter(market__pair="BTC-USD").exists()
    return order


def test_readyz_fails_naming_the_pair_whose_oldest_command_waits_past_its_budget(queued_order, settings):
    settings.MATCHER_LAG_BUDGET_SECONDS = 5
    assert Client().get("/readyz").status_code == 200  # queued just now: within its budget
    MatcherCommand.objects.update(queued_at=timezone.now() - timedelta(seconds=60))
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["failed"] == ["matchers"]
    assert body["checks"]["database"] == "ok"
    assert list(body["checks"]["matchers"]["lagging"]) == ["BTC-USD"]
    assert body["checks"]["matchers"]["lagging"]["BTC-USD"] >= 60
    assert body["checks"]["matchers"]["budget_seconds"] == 5

    # A halted market's queue waits for its resume: not a matcher behind.
    Market.objects.filter(pair="BTC-USD").update(status=Market.Status.HALTED)
    assert Client().get("/readyz").status_code == 200
    Market.objects.filter(pair="BTC-USD").update(status=Market.Status.CANCEL_ONLY)
    assert Client().get("/readyz").status_code == 503

    dispatch.run_matcher("BTC-USD")
    assert not MatcherCommand.objects.exists()
    assert Client().get("/readyz").status_code == 200


def test_readyz_names_a_dependency_that_does_not_answer(markets, settings):
    settings.READINESS_CHECKS = {**settings.READINESS_CHECKS, "redis": "exchange.health.redis"}
    settings.REDIS_CLIENT = {"url": "redis://127.0.0.1:1/0", "socket_connect_timeout": 1, "socket_timeout": 1}
    exchange_redis.get_redis.cache_clear()
    try:
        response = Client().get("/readyz")
    finally:
        exchange_redis.get_redis.cache_clear()
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis"]
    assert body["checks"]["redis"].startswith("ConnectionError")
    assert body["checks"]["database"] == "ok" and body["checks"]["matchers"] == "ok"


@pytest.mark.slow
def test_readyz_on_gunicorn_and_daphne_fails_naming_a_stopped_matchers_pair_then_recovers(tmp_path):
    with Stack(tmp_path, MATCHER_LAG_BUDGET_SECONDS="1") as stack:
        servers = [stack.start_rest(), stack.start_daphne()]
        stack.start_matcher("BTC-USD")
        trader = stack.create_trader("prober", "USD=100000")
        bot = BotClient(servers[0], trader["key"], trader["secret"])

        def readyz() -> list[httpx.Response]:
            return [httpx.get(f"{server}/readyz", timeout=10) for server in servers]

        assert [response.status_code for response in readyz()] == [200, 200]
        assert set(readyz()[0].json()["checks"]) == {"database", "redis", "matchers"}
        assert bot.place_order("BTC-USD", "buy", "limit", price="100", size="0.01")["status"] == "open"

        stack.kill_matcher("BTC-USD")
        assert bot.place_order("BTC-USD", "buy", "limit", price="101", size="0.01")["status"] == "pending"
        def all_answer(status: int) -> list[httpx.Response] | None:
            answers = readyz()
            return answers if all(response.status_code == status for response in answers) else None

        failing = wait_until(lambda: all_answer(503), what="/readyz failing")
        for response in failing:
            assert response.json()["failed"] == ["matchers"]
            assert list(response.json()["checks"]["matchers"]["lagging"]) == ["BTC-USD"]
        assert [httpx.get(f"{server}/healthz").status_code for server in servers] == [200, 200]

        stack.start_matcher("BTC-USD")  # drains what was queued meanwhile
        wait_until(lambda: all_answer(200), what="/readyz ready again")
