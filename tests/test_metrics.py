"""/metrics (exchange/metrics.py, exchange/metrics_http.py) in one process, through Django's test client: who may
scrape it, and that its counters move by what the requests did. tests/test_e2e_metrics.py does the same across
the production processes."""

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from celery import shared_task
from django.db import OperationalError
from django.db.models import QuerySet
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exchange import metrics
from trading import dispatch, services
from trading.audit import run_audit
from trading.models import AuditRun, Market, MatcherCommand

from .conftest import trader_fixture

TOKEN = "operator-" + "m" * 40
bob = trader_fixture("bob", USD="100000", BTC="10")


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted label pairs) -> value, of a scrape's text."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape() -> dict[tuple, float]:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def moved(before: dict, after: dict) -> dict[tuple, float]:
    """What changed between two scrapes, but the timings' sums (their values are not the test's to know)."""
    return {key: after[key] - before.get(key, 0) for key in after if key[0].startswith("exchange_")
            and after[key] != before.get(key, 0) and not key[0].endswith(("_sum", "_created"))}


def key(name: str, **labels: str) -> tuple:
    return name, tuple(sorted(labels.items()))


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN


def test_no_metrics_without_a_token_configured(db, settings):
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics")
    assert response.status_code == 404  # as for any path the site does not have
    assert b"exchange_" not in response.content


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}"])
def test_metrics_refused_without_the_token(db, token, authorization):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"exchange_" not in response.content


def test_metrics_answer_any_host_over_plain_http(db, token, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = Client().get("/metrics", HTTP_HOST="10.244.0.7:8001", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert b"# TYPE exchange_http_requests_total counter" in response.content


def test_counters_move_by_what_the_requests_did(alice, bob, make_key, token, django_capture_on_commit_callbacks):
    seller, buyer = make_key(alice), make_key(bob)
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):
        assert seller.post("/v1/orders", {"pair": "BTC-USD", "side": "sell", "type": "limit", "price": "100",
                                          "size": "1"}).status_code == 201
    with django_capture_on_commit_callbacks(execute=True):
        assert buyer.post("/v1/orders", {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "100",
                                         "size": "1"}).status_code == 201
    refused = buyer.post("/v1/orders", {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "100",
                                        "size": "100000"})
    assert refused.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    assert buyer.post("/v1/orders", {"pair": "BTC-USD"}, secret="not-the-secret").status_code == 401
    assert Client().get("/v1/time").status_code == 200
    assert Client().get("/v1/no-such-thing").status_code == 404

    after = scrape()
    # A finite bucket moves with every observation at or below it, and the gauges are set: asserted apart.
    exact = {name_labels: change for name_labels, change in moved(before, after).items()
             if not (name_labels[0].endswith("_bucket") and ("le", "+Inf") not in name_labels[1])
             and name_labels[0] not in ("exchange_book_depth_levels", "exchange_matcher_last_sequence")}
    assert exact == {
        key("exchange_http_requests_total", endpoint="order-list", method="POST", status="201", code=""): 2,
        key("exchange_http_requests_total", endpoint="order-list", method="POST", status="400",
            code="INSUFFICIENT_FUNDS"): 1,
        key("exchange_http_requests_total", endpoint="order-list", method="POST", status="401",
            code="INVALID_SIGNATURE"): 1,
        key("exchange_http_requests_total", endpoint="time", method="GET", status="200", code=""): 1,
        key("exchange_http_requests_total", endpoint="unmatched", method="GET", status="404", code="NOT_FOUND"): 1,
        **{key(f"exchange_http_request_duration_seconds_{sample}", endpoint=endpoint, method=method, **bucket): count
           for endpoint, method, count in [("order-list", "POST", 4), ("time", "GET", 1), ("unmatched", "GET", 1)]
           for sample, bucket in [("count", {}), ("bucket", {"le": "+Inf"})]},
        key("exchange_auth_refusals_total", code="INVALID_SIGNATURE", transport="rest"): 1,
        key("exchange_matcher_commands_total", pair="BTC-USD"): 2,
        key("exchange_trades_total", pair="BTC-USD"): 1,
        **{key(f"exchange_matcher_{name}_{sample}", pair="BTC-USD", **bucket): 2
           for name in ("batch_size", "batch_write_seconds", "lag_seconds")
           for sample, bucket in [("count", {}), ("bucket", {"le": "+Inf"})]},
    }
    assert after[key("exchange_book_depth_levels", pair="BTC-USD", side="bid")] == 0
    assert after[key("exchange_book_depth_levels", pair="BTC-USD", side="ask")] == 0
    assert after[key("exchange_matcher_last_sequence", pair="BTC-USD")] == 2
    assert after[key("exchange_matcher_queue_depth", pair="BTC-USD")] == 0
    # The waits are read in seconds since the epoch on both vendors: a time zone mixed up would be hours.
    waited = (after[key("exchange_matcher_lag_seconds_sum", pair="BTC-USD")]
              - before.get(key("exchange_matcher_lag_seconds_sum", pair="BTC-USD"), 0))
    assert 0 <= waited < 600


def test_a_command_queued_by_a_database_clock_ahead_of_the_matcher_waited_no_time():
    """queued_at is the database's clock, the wait the matcher host's: a lag observation below 0 would make
    the histogram's sum go down, which rate() reads as a counter reset."""
    from trading.engine_impl import engine
    from trading.matcher import PairMetrics

    def lag_sum() -> float:
        return REGISTRY.get_sample_value("exchange_matcher_lag_seconds_sum", {"pair": "BTC-USD"}) or 0.0

    before = lag_sum()
    PairMetrics("BTC-USD").matched([("cancel", time.time() + 0.05)], engine.OrderBook("BTC-USD"))

    assert lag_sum() == before


def test_rate_limit_refusals_are_counted_by_budget(db, markets, token, settings):
    settings.PUBLIC_WEIGHT_PER_MINUTE = 1
    before = scrape()
    client = Client()
    assert client.get("/v1/time").status_code == 200
    assert client.get("/v1/time").status_code == 429
    changed = moved(before, scrape())
    assert changed[key("exchange_rate_limit_refusals_total", budget="address")] == 1
    assert changed[key("exchange_http_requests_total", endpoint="time", method="GET", status="429",
                       code="RATE_LIMITED")] == 1


def test_the_queue_and_the_last_audit_are_read_at_scrape(alice, token, make_key, monkeypatch):
    # Accepted, its matcher not woken: a create wakes it in the round trip that waits for its answer.
    monkeypatch.setattr(dispatch, "wake_and_wait_for_state", lambda pair, order_id, timeout: None)
    assert make_key(alice).post("/v1/orders", {"pair": "ETH-USD", "side": "buy", "type": "limit",
                                               "price": "100", "size": "1"}).status_code == 201
    values = scrape()
    assert values[key("exchange_matcher_queue_depth", pair="ETH-USD")] == 1
    assert values[key("exchange_matcher_oldest_command_age_seconds", pair="ETH-USD")] >= 0
    assert values[key("exchange_matcher_queue_depth", pair="BTC-USD")] == 0
    assert key("exchange_ledger_audit_problems") not in values  # never run

    run = run_audit(AuditRun.Trigger.COMMAND)
    values = scrape()
    assert values[key("exchange_ledger_audit_problems")] == run.problem_count == 0
    assert values[key("exchange_ledger_audit_last_run_timestamp_seconds")] == run.started_at.timestamp()
    assert values[key("exchange_ledger_audit_duration_seconds")] == run.duration.total_seconds()


def test_a_halted_markets_queue_is_no_lag(alice, token, make_key, monkeypatch):
    """A halted market's queue waits for the resume: /readyz does not count it, nor may MatcherLagging."""
    monkeypatch.setattr(dispatch, "wake_and_wait_for_state", lambda pair, order_id, timeout: None)
    assert make_key(alice).post("/v1/orders", {"pair": "ETH-USD", "side": "buy", "type": "limit",
                                               "price": "100", "size": "1"}).status_code == 201
    MatcherCommand.objects.update(queued_at=timezone.now() - timedelta(seconds=60))
    assert scrape()[key("exchange_matcher_oldest_command_age_seconds", pair="ETH-USD")] >= 60

    services.set_market_status(Market.objects.get(pair="ETH-USD").pk, Market.Status.HALTED)
    values = scrape()

    assert values[key("exchange_matcher_oldest_command_age_seconds", pair="ETH-USD")] == 0
    assert values[key("exchange_matcher_queue_depth", pair="ETH-USD")] == 1
    assert Client().get("/readyz").status_code == 200


def test_the_processs_metrics_are_served_while_the_database_is_away(db, markets, token, monkeypatch):
    assert scrape()[key("exchange_scraped_reads_failed")] == 0

    def database_away(queryset):
        raise OperationalError("connection refused")

    monkeypatch.setattr(QuerySet, "_fetch_all", database_away)
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    values = samples(response.content.decode())
    assert values[key("exchange_scraped_reads_failed")] == 2  # the queues and the last audit
    assert not any(name == "exchange_matcher_queue_depth" for name, _ in values)
    assert any(name == "exchange_http_requests_total" for name, _ in values)


def test_observe_many_is_observe_for_each_value():
    values = [0.0005, 0.001, 0.001, 0.003, 7.0, 100.0, 0.0]
    many, each = metrics.MATCHER_LAG.labels("TEST-MANY"), metrics.MATCHER_LAG.labels("TEST-EACH")
    metrics.observe_many(many, values)
    for value in values:
        each.observe(value)
    exposed = samples(generate_latest(REGISTRY).decode())  # this process's (the test's own) values
    for (name, labels), value in exposed.items():
        if ("pair", "TEST-MANY") in labels and not name.endswith("_created"):
            other = exposed[name, tuple(("pair", "TEST-EACH") if label == ("pair", "TEST-MANY") else label
                                        for label in labels)]
            assert value == pytest.approx(other)


@shared_task(name="tests.metrics.fails", bind=True, max_retries=1)
def failing_task(self, retry: bool):
    """Fails, or (``retry``) asks for one retry, which succeeds."""
    if not retry:
        raise ValueError("this task fails")
    if self.request.retries == 0:
        raise self.retry(countdown=0)


def test_celery_failures_and_retries_are_counted_by_task():
    before = samples(generate_latest(REGISTRY).decode())
    failing_task.apply(args=[False])
    failing_task.apply(args=[True])
    changed = moved(before, samples(generate_latest(REGISTRY).decode()))
    assert changed == {key("exchange_celery_task_failures_total", task="tests.metrics.fails"): 1,
                       key("exchange_celery_task_retries_total", task="tests.metrics.fails"): 1}


def test_a_process_gone_keeps_its_counts_but_leaves_the_live_gauges(tmp_path):
    """In multiprocess mode (tmp_path as the directory): one process opens a connection and exits without any
    cleanup, as a killed one would; another's scrape still counts the opening, not the connection."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "exchange.settings"}
    opened = "from exchange import metrics\nmetrics.WS_CONNECTIONS_OPENED.inc()\nmetrics.WS_CONNECTIONS.inc()\n"
    subprocess.run([sys.executable, "-c", opened], env=env, check=True)
    scraped = subprocess.run([sys.executable, "-c", opened + "print(metrics.exposition().decode())"], env=env,
                             check=True, capture_output=True, text=True).stdout
    values = samples(scraped)
    assert values[key("exchange_ws_connections_opened_total")] == 2
    assert values[key("exchange_ws_connections")] == 1
