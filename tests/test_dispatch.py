"""How committed work reaches the matcher when something on the way fails: a committed order is
never left unanswered or unmatched."""

import threading
import time

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connections
from prometheus_client import REGISTRY

from exchange.redis import RoundTrip, get_redis
from trading import backends, dispatch
from trading.backends import CeleryMatchers
from trading.matcher import PairMatcher
from trading.models import MatcherCommand, Order
from trading.settlement import WRITTEN_ORDER_FIELDS

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

LIMIT_BUY = {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01"}


def failing_once(original):
    calls = []

    def drain(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return original(self)

    return drain


def test_a_failed_publish_neither_fails_the_request_nor_keeps_the_order_from_the_matcher(as_trader, alice,
                                                                                          monkeypatch):
    def broken_channel_layer(*args, **kwargs):
        raise ConnectionError("channel layer down")

    monkeypatch.setattr(backends.Bus, "send", broken_channel_layer)

    response = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "open"
    assert MatcherCommand.objects.count() == 0


def drain_failures(pair: str) -> float:
    return REGISTRY.get_sample_value("exchange_matcher_drain_failures_total", {"pair": pair}) or 0.0


def test_a_failed_in_process_drain_is_retried_without_a_new_order(as_trader, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 0.2)
    monkeypatch.setattr(PairMatcher, "drain", failing_once(PairMatcher.drain))
    failures_before = drain_failures("BTC-USD"), drain_failures("ETH-USD")

    response = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")

    assert response.status_code == 201 and response.json()["status"] == "pending"
    deadline = time.monotonic() + 10
    while Order.objects.get().status == Order.Status.PENDING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Order.objects.get().status == Order.Status.OPEN
    assert MatcherCommand.objects.count() == 0
    # The failure is counted for its pair (exchange_matcher_drain_failures_total), the retry's success is not.
    assert (drain_failures("BTC-USD"), drain_failures("ETH-USD")) == (failures_before[0] + 1, failures_before[1])


def test_wake_matchers_drains_what_a_crash_left_queued(as_trader, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "retry_later", lambda pair: None)  # as if the process died after its commit
    monkeypatch.setattr(PairMatcher, "drain", failing_once(PairMatcher.drain))
    as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")
    assert Order.objects.get().status == Order.Status.PENDING

    call_command("wake_matchers", verbosity=0)

    assert Order.objects.get().status == Order.Status.OPEN
    assert MatcherCommand.objects.count() == 0


def test_wake_matchers_exits_non_zero_naming_a_pair_it_could_not_drain(as_trader, alice, monkeypatch):
    """Its retry would be a timer of the command's own process, which ends: cron and bin/run-local must hear."""
    monkeypatch.setattr(dispatch, "retry_later", lambda pair: None)
    drain = PairMatcher.drain
    monkeypatch.setattr(PairMatcher, "drain", failing_once(drain))
    as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")
    monkeypatch.setattr(PairMatcher, "drain", failing_once(drain))

    with pytest.raises(CommandError, match="could not wake the matcher.s. of BTC-USD"):
        call_command("wake_matchers", verbosity=0)

    assert MatcherCommand.objects.count() == 1  # still queued, for the next run
    call_command("wake_matchers", verbosity=0)
    assert MatcherCommand.objects.count() == 0


def test_a_wake_up_that_cannot_be_sent_is_retried(as_trader, alice, settings, monkeypatch):
    """Celery mode, Redis down: the order is committed and answered, and its wake-up tried again later (the
    matcher's own poll would find it too: tests/test_matcher_loop.py)."""
    settings.MATCHER_BACKEND = "trading.backends.CeleryMatchers"
    retried = []
    monkeypatch.setattr(dispatch, "retry_later", retried.append)

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(CeleryMatchers, "wake_up_commands", broker_down)  # a create wakes in its wait's round trip
    monkeypatch.setattr(CeleryMatchers, "wait", lambda self, order_id, timeout: None)

    response = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")

    assert response.status_code == 201 and response.json()["status"] == "pending"
    assert retried == ["BTC-USD"]


@pytest.mark.skipif(not settings.REDIS_URL, reason="the wake-up and the wait are Redis lists")
def test_a_create_wakes_its_matcher_where_it_waits_for_the_answer(as_trader, alice, settings):
    """Celery mode, no matcher running: the create answers pending once its wait ends, its pair's wake-up sent
    (in the wait's round trip) and its order queued for the matcher."""
    settings.MATCHER_BACKEND = "trading.backends.CeleryMatchers"
    wake_key = CeleryMatchers().wake_key("BTC-USD")
    get_redis().delete(wake_key)

    response = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")

    assert response.status_code == 201 and response.json()["status"] == "pending"
    assert get_redis().lrange(wake_key, 0, -1) == [b"1"]
    assert MatcherCommand.objects.get().order_id == int(response.json()["order_id"])


@pytest.mark.skipif(not settings.REDIS_URL, reason="the matcher's answers go through Redis")
def test_a_cancel_is_not_answered_by_a_state_left_from_the_create(as_trader, alice, settings, monkeypatch):
    """A create that answered pending leaves the state its matcher handed over behind for 30 s; the
    cancel that follows must wait for the state the cancel itself left."""
    client = as_trader(alice)
    order_id = client.post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]  # open, in process
    settings.MATCHER_BACKEND = "trading.backends.CeleryMatchers"
    monkeypatch.setattr(CeleryMatchers, "queue_wake_up", lambda self, pair: None)  # this test runs the matcher
    left_over = Order.objects.values_list(*WRITTEN_ORDER_FIELDS).get(pk=order_id)
    trip = RoundTrip()
    backends.matchers().reply({order_id: left_over}, trip)
    trip.run()

    def matcher_worker():
        dispatch.run_matcher("BTC-USD")
        connections.close_all()

    worker = threading.Timer(0.3, matcher_worker)
    worker.start()
    response = client.post(f"/v1/orders/{order_id}/cancel")
    worker.join()

    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_failed_wake_ups_keep_one_retry_per_pair_and_back_off(monkeypatch):
    """A fault a retry cannot mend must not turn into a storm of book rebuilds."""
    scheduled = []

    class RecordedTimer:
        def __init__(self, delay, function, args):
            scheduled.append((delay, args))
            self.daemon = False

        def start(self):
            pass

        cancel = join = start

    monkeypatch.setattr(dispatch.threading, "Timer", RecordedTimer)
    monkeypatch.setattr(dispatch, "wake_matcher", lambda pair: dispatch.retry_later(pair))  # fails every time

    for _ in range(3):  # three orders' wake-ups fail while the first retry waits
        dispatch.retry_later("BTC-USD")
    dispatch.retry_later("ETH-USD")
    for _ in range(5):  # the retries run, and fail again
        dispatch.wake_in_thread("BTC-USD")

    btc = [delay for delay, args in scheduled if args == ["BTC-USD"]]
    assert btc == [5.0, 40.0, 60.0, 60.0, 60.0, 60.0]  # every failure counts, also the waiting ones
    assert [delay for delay, args in scheduled if args == ["ETH-USD"]] == [5.0]


def test_a_wake_up_that_works_starts_the_back_off_again_and_cancels_the_pending_retry(monkeypatch):
    """docs/api.md: once a wake-up works the backoff starts again from 5 s: a failure after it must not wait for
    a retry scheduled a minute off while the pair kept failing."""
    scheduled = []

    class RecordedTimer:
        def __init__(self, delay, function, args):
            scheduled.append(self)
            self.delay, self.daemon, self.cancelled = delay, False, False

        def start(self):
            pass

        def cancel(self):
            self.cancelled = True

        def join(self):  # dispatch.reset at teardown
            pass

    class Matchers:
        up = False

        def wake(self, pair, drain):
            if not self.up:
                raise ConnectionError("the database is restarting")

    matchers = Matchers()
    monkeypatch.setattr(dispatch.threading, "Timer", RecordedTimer)
    monkeypatch.setattr(dispatch, "matchers", lambda: matchers)
    monkeypatch.setattr(dispatch.connections, "close_all", lambda: None)

    dispatch.wake_matcher("BTC-USD")  # fails: a retry in 5 s
    for _ in range(4):
        dispatch.wake_in_thread("BTC-USD")  # the retries fail too, backing off
    assert [timer.delay for timer in scheduled] == [5.0, 10.0, 20.0, 40.0, 60.0]
    matchers.up = True
    dispatch.wake_matcher("BTC-USD")  # a new order's wake-up works
    matchers.up = False
    dispatch.wake_matcher("BTC-USD")  # the next one's fails

    assert [timer.delay for timer in scheduled] == [5.0, 10.0, 20.0, 40.0, 60.0, 5.0]
    assert scheduled[4].cancelled and not scheduled[5].cancelled


def test_reset_cancels_pending_retries_and_waits_for_a_draining_one(monkeypatch):
    """A retry left by one test would drain the pair during a later one: its transaction raced that test's
    flush of the database, a deadlock seen in CI."""
    draining, release, woken = threading.Event(), threading.Event(), []

    def slow_wake_up(pair):
        if pair == "ETH-USD":
            draining.set()
            release.wait()
        woken.append(pair)

    monkeypatch.setattr(dispatch, "wake_matcher", slow_wake_up)
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 0.01)
    before = set(threading.enumerate())
    dispatch.retry_later("ETH-USD")  # fires at once and drains until released
    draining.wait()
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 3600.0)
    dispatch.retry_later("BTC-USD")  # pending
    timers = set(threading.enumerate()) - before
    threading.Timer(0.2, release.set).start()  # while reset waits (were it not waiting, ETH-USD would be missing)

    dispatch.reset()

    assert len(timers) == 2 and not any(timer.is_alive() for timer in timers)
    assert woken == ["ETH-USD"]
