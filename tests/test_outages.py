"""Honest answers in outages: a database or Redis that is down is 503 SERVICE_UNAVAILABLE with
Retry-After, never 500, and an order or cancel that was committed is answered with what is known of it."""

import socket
from contextlib import contextmanager

import pytest
from django.db import OperationalError, connection, connections
from django.test import Client

from accounts import key_cache
from exchange.errors import OUTAGE_RETRY_AFTER_SECONDS
from exchange.redis import get_redis
from trading import dispatch
from trading import backends
from trading.backends import CeleryMatchers
from trading.matcher import PairMatcher
from trading.models import MatcherCommand, Order

from .processes import free_port

LIMIT_BUY = {"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "63000", "size": "0.01"}


def assert_unavailable(response, **details):
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == str(OUTAGE_RETRY_AFTER_SECONDS)
    error = response.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE" and error["message"]
    assert error["details"] == {**details, "retry_after": OUTAGE_RETRY_AFTER_SECONDS}


# The backends of the production stack, which use Redis.
REDIS_BACKENDS = {"RATE_LIMIT_WINDOWS": "exchange.ratelimit_backends.RedisWindows",
                  "NONCE_TOKENS": "accounts.key_cache_backends.RedisTokens",
                  "REPLAY_BUFFER": "marketdata.replay_backends.RedisReplay"}


@contextmanager
def redis_at(settings, url: str):
    """Point everything that uses Redis (cache, nonces, rate limits, the matcher's announcements) at
    ``url`` once the returned function is called (after the test's keys and orders are made)."""

    def point_at(stack: dict):
        for name, value in stack.items():
            setattr(settings, name, value)  # a backend whose setting changed is made anew
        get_redis.cache_clear()
        backends.matchers().reset()
        key_cache.reset()

    redis_stack = {**REDIS_BACKENDS, "REDIS_URL": url, "REDIS_CLIENT": {**settings.REDIS_CLIENT, "url": url},
                   "CACHES": {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                                          "OPTIONS": settings.REDIS_TIMEOUTS}}}
    before = {name: getattr(settings, name) for name in redis_stack}
    yield lambda: point_at(redis_stack)
    point_at(before)


@pytest.fixture
def cut_redis(settings):
    """Redis down: a port where nothing listens (connections are refused)."""
    with redis_at(settings, f"redis://127.0.0.1:{free_port()}/0") as cut:
        yield cut


@pytest.fixture
def silent_redis(settings):
    """Redis cut off by the network: connections are accepted and nothing ever answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        with redis_at(settings, f"redis://127.0.0.1:{server.getsockname()[1]}/0") as cut:
            yield cut


@contextmanager
def database_down(after=None):
    """Every statement on this thread's connection fails as on a dropped connection; with ``after``,
    only those outside the transaction in which a statement ``after`` accepts has run (that
    transaction commits, and what follows it fails)."""
    seen = []

    def fail(execute, sql, params, many, context):
        if after is None or (seen and not (connection.in_atomic_block and connection.atomic_blocks[0] is seen[0])):
            raise OperationalError("server closed the connection unexpectedly")
        if after(sql) and not seen:
            seen.append(connection.atomic_blocks[0])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail):
        yield


def test_time_with_redis_unreachable_is_503_with_retry_after(db, cut_redis):
    cut_redis()

    assert_unavailable(Client().get("/v1/time"))


def test_time_with_redis_not_answering_is_503_not_a_hang(db, silent_redis):
    silent_redis()

    assert_unavailable(Client().get("/v1/time"))


def test_a_signed_request_with_redis_unreachable_is_503(alice, make_key, cut_redis):
    bot = make_key(alice)
    cut_redis()

    assert_unavailable(bot.get("/v1/account/balances"))
    assert_unavailable(bot.post("/v1/orders", LIMIT_BUY))


def test_a_refusal_outside_drf_with_redis_unreachable_is_503(db, cut_redis):
    """An unknown path is answered by Django's 404 handler; its refusal charge then meets the outage."""
    cut_redis()

    assert_unavailable(Client().get("/v1/no-such-endpoint"))


def test_a_database_error_is_503(as_trader, alice, markets):
    with database_down():
        assert_unavailable(Client().get("/v1/trades/BTC-USD"))
        assert_unavailable(as_trader(alice).get("/v1/orders"))


def test_a_database_error_outside_drf_is_503(client, alice):
    """The account pages read the session and the user before any view: Django's handler500 answers."""
    client.force_login(alice.user)
    client.raise_request_exception = False

    with database_down():
        response = client.get("/account/keys/")

    assert response.status_code == 503 and response["Retry-After"] == str(OUTAGE_RETRY_AFTER_SECONDS)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_create_whose_matching_fails_after_the_commit_answers_201_with_the_order(as_trader, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 3600.0)  # a failed in-process drain is not retried here

    with database_down(after=lambda sql: "INSERT INTO" in sql and "trading_order" in sql):
        response = as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "client_order_id": "after-commit"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending" and body["client_order_id"] == "after-commit"
    assert Order.objects.get(pk=body["order_id"]).client_order_id == "after-commit"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_create_whose_wait_for_the_matcher_fails_answers_201_with_the_order(as_trader, alice, settings,
                                                                             monkeypatch, cut_redis):
    settings.MATCHER_BACKEND = "trading.backends.CeleryMatchers"
    monkeypatch.setattr(CeleryMatchers, "queue_wake_up", lambda self, pair: None)  # no worker in this test
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 3600.0)
    cut_redis()
    settings.RATE_LIMIT_WINDOWS = "exchange.ratelimit_backends.InProcessWindows"  # the budget is not what fails here

    response = as_trader(alice).post("/v1/orders", LIMIT_BUY, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "pending"
    assert Order.objects.get().pk == response.json()["order_id"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_commit_that_fails_in_an_outage_answers_503_naming_the_order_and_wakes_its_matcher(as_trader, alice,
                                                                                            monkeypatch):
    """The connection drops after the server committed: the client cannot know, so it is told the id."""
    wrapper = connections["default"]
    commit = wrapper._commit

    def commit_then_drop():
        monkeypatch.setattr(wrapper, "_commit", commit)
        commit()
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(wrapper, "_commit", commit_then_drop)

    response = as_trader(alice).post("/v1/orders", {**LIMIT_BUY, "client_order_id": "lost-commit"}, format="json")

    order = Order.objects.get()
    assert_unavailable(response, order_id=order.pk, client_order_id="lost-commit")
    assert order.status == Order.Status.OPEN  # the matcher got it although the on-commit wake-up was dropped
    assert MatcherCommand.objects.count() == 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_cancel_whose_read_back_fails_after_the_commit_answers_202_cancel_requested(as_trader, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 3600.0)
    client = as_trader(alice)
    order_id = client.post("/v1/orders", LIMIT_BUY, format="json").json()["order_id"]

    with database_down(after=lambda sql: "INSERT INTO" in sql and "trading_matchercommand" in sql):
        response = client.post(f"/v1/orders/{order_id}/cancel")

    assert response.status_code == 202, response.content
    assert response.json()["order_id"] == order_id and response.json()["cancel_requested"] is True
    assert Order.objects.get(pk=order_id).cancel_requested


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_after_failed_in_process_drains_a_new_order_is_matched_at_once(as_trader, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 3600.0)  # the pending retry never comes in this test
    drain = PairMatcher.drain
    failures = iter(range(2))

    def database_restarting(self):
        if next(failures, None) is not None:
            raise OperationalError("the database system is starting up")
        return drain(self)

    monkeypatch.setattr(PairMatcher, "drain", database_restarting)
    client = as_trader(alice)
    first = [client.post("/v1/orders", LIMIT_BUY, format="json").json() for _ in range(2)]
    assert [order["status"] for order in first] == ["pending", "pending"]

    response = client.post("/v1/orders", LIMIT_BUY, format="json")

    assert response.json()["status"] == "open"
    assert set(Order.objects.values_list("status", flat=True)) == {Order.Status.OPEN}
