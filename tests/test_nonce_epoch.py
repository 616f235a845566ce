"""Replay protection that survives the nonce store (accounts/key_cache.py): when the store loses its memory
(Redis restarted without its data or flushed; on the embedded default, the process restarted), a request
older than the store's epoch cannot be proven fresh and is refused.

On Redis (REDIS_URL set) the loss is a FLUSHDB under the running process, as a restarted Redis is seen;
on the embedded default it is a restart of the process: its cache emptied and its key cache started anew.
"""

import json
import secrets

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.cache import cache
from redis.backoff import NoBackoff
from redis.retry import Retry

from accounts import key_cache, key_cache_backends
from accounts.keys import create_api_key, prehash, sign
from exchange.asgi import application
from exchange.redis import get_redis
from trading.models import Order

from .processes import free_port
from .signing import now_ms
from .test_auth import ORDER, nothing_written, trader  # noqa: F401  the fixture
from .test_public_api import assert_error
from .test_python_client import in_process_http, live  # noqa: F401  the fixtures

BODY = json.dumps(ORDER).encode()  # as SignedClient sends ORDER


def lose_nonce_memory() -> None:
    started = now_ms()
    while now_ms() == started:  # at most a millisecond: everything made before is strictly older than the epoch
        pass
    if settings.REDIS_URL:
        get_redis().flushdb()
    else:
        cache.clear()
        key_cache.reset()


def refused_before_epoch(response) -> dict:
    """The refusal's details, checked: the code clients already answer by signing again, and the epoch."""
    assert_error(response, 401, "TIMESTAMP_OUT_OF_WINDOW")
    details = response.json()["error"]["details"]
    assert details["nonce_epoch"] <= details["server_time"] and details["tolerance_ms"] == 5000
    return details


def test_an_order_signed_before_the_loss_is_not_placed_again_by_its_replay(trader, make_key):
    bot = make_key(trader)
    captured = bot.headers("POST", "/v1/orders", BODY)
    assert bot.post("/v1/orders", ORDER, headers=captured).status_code == 201
    assert_error(bot.post("/v1/orders", ORDER, headers=captured), 401, "NONCE_REUSED")

    lose_nonce_memory()
    before = nothing_written()
    replayed = bot.post("/v1/orders", ORDER, headers=captured)

    details = refused_before_epoch(replayed)
    assert details["nonce_epoch"] > int(captured["X-Api-Timestamp"])
    assert nothing_written() == before and Order.objects.count() == 1


def test_requests_signed_after_the_epoch_pass_and_do_not_move_it(trader, make_key):
    bot = make_key(trader)
    first, second = (bot.headers("POST", "/v1/orders", BODY) for _ in range(2))
    for captured in (first, second):
        assert bot.post("/v1/orders", ORDER, headers=captured).status_code == 201
    lose_nonce_memory()

    epoch = refused_before_epoch(bot.post("/v1/orders", ORDER, headers=first))["nonce_epoch"]
    fresh = [bot.post("/v1/orders", ORDER) for _ in range(3)]
    again = refused_before_epoch(bot.post("/v1/orders", ORDER, headers=second))["nonce_epoch"]

    assert [response.status_code for response in fresh] == [201] * 3
    assert again == epoch
    assert Order.objects.count() == 5


def test_a_request_in_flight_across_the_loss_is_refused_and_passes_signed_again(trader, make_key):
    bot = make_key(trader)
    assert bot.get("/v1/time").status_code == 200
    in_flight = bot.headers("POST", "/v1/orders", BODY)

    lose_nonce_memory()

    refused_before_epoch(bot.post("/v1/orders", ORDER, headers=in_flight))
    assert bot.post("/v1/orders", ORDER).status_code == 201
    assert Order.objects.count() == 1


def test_a_key_created_after_the_epoch_is_not_held_to_it(trader, make_key):
    old = make_key(trader, scope="read_only")
    captured = old.headers("GET", "/v1/time", b"")
    lose_nonce_memory()
    epoch = refused_before_epoch(old.get("/v1/time", headers=captured))["nonce_epoch"]

    new = make_key(trader)  # no request with it can have been admitted before the loss
    response = new.post("/v1/orders", ORDER, timestamp=epoch - 1000)  # a clock a second behind

    assert response.status_code == 201, response.content


def test_a_process_started_on_an_empty_store_starts_its_memory(trader, make_key):
    """After a deploy on an empty Redis (or any restart of the embedded default) the processes' start
    sets the epoch, so the first requests signed after it are not refused."""
    bot = make_key(trader)
    lose_nonce_memory()
    key_cache.reset()  # the process restarts

    assert bot.post("/v1/orders", ORDER).status_code == 201


def test_the_python_client_signs_again_after_the_refusal(live):
    live.clock_offset_ms = -1000  # its requests are signed a second behind the server: before the epoch
    lose_nonce_memory()
    key_cache.reset()

    order = live.place_order("BTC-USD", "buy", "limit", price="20000", size="0.01", client_order_id="after-loss")

    assert order["client_order_id"] == "after-loss" and Order.objects.count() == 1
    assert abs(live.clock_offset_ms) < 1000  # learnt from the refusal's server_time


def auth_op(key_id: str, secret: str, timestamp: int) -> dict:
    nonce = secrets.token_hex(8)
    return {"op": "auth", "key": key_id, "timestamp": str(timestamp), "nonce": nonce,
            "signature": sign(secret, prehash(str(timestamp), nonce, "GET", "/v1/ws", b""))}


async def answer_to(message: dict) -> dict:
    socket = WebsocketCommunicator(application, "/v1/ws")
    socket.scope["client"] = ("127.0.0.1", 50000)
    assert (await socket.connect())[0]
    await socket.send_to(text_data=json.dumps(message))
    answer = json.loads(await socket.receive_from(timeout=3))
    await socket.disconnect()
    return answer


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_websocket_auth_signed_before_the_loss_is_refused(make_account):
    key, secret = create_api_key(make_account(), label="ws", scope="read_only", ip_allowlist=[])
    captured = auth_op(key.public_id, secret, now_ms())
    assert async_to_sync(answer_to)(captured)["type"] == "authenticated"

    lose_nonce_memory()
    replayed = async_to_sync(answer_to)(captured)
    fresh = async_to_sync(answer_to)(auth_op(key.public_id, secret, now_ms()))

    assert replayed["type"] == "error" and replayed["code"] == "TIMESTAMP_OUT_OF_WINDOW"
    assert replayed["details"]["nonce_epoch"] > int(captured["timestamp"])
    assert fresh["type"] == "authenticated"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_signed_request_with_the_nonce_store_down_is_503_on_rest_and_websocket(make_account, make_key,
                                                                                   monkeypatch, settings):
    if not settings.REDIS_URL:
        pytest.skip("the nonce store is this process's memory without REDIS_URL")
    account = make_account()
    bot = make_key(account)
    key, secret = create_api_key(account, label="ws", scope="read_only", ip_allowlist=[])
    down = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))  # refused at once, not retried
    monkeypatch.setattr(key_cache_backends, "get_redis", lambda: down)
    settings.NONCE_TOKENS = settings.NONCE_TOKENS  # made anew, on that client
    before = nothing_written()

    response = bot.post("/v1/orders", ORDER)
    answer = async_to_sync(answer_to)(auth_op(key.public_id, secret, now_ms()))

    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert response["Retry-After"] == str(answer["details"]["retry_after"])
    assert answer["type"] == "error" and answer["code"] == "SERVICE_UNAVAILABLE"
    assert nothing_written() == before
