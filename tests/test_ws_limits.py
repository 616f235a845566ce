"""The WebSocket's strict input and its private-event numbering, through Channels' communicator.

The server's frame limits and the slow consumer's close are Daphne's side: tests/test_e2e_ws_limits.py.
"""

import asyncio
import json
import threading
import time
from decimal import Decimal

import pytest
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import OperationalError

from accounts.keys import create_api_key
from exchange.redis import Reply, get_redis
from marketdata import consumers, publishing, streams
from marketdata.account_events import GRACE_SECONDS
from marketdata.hub import StreamHub, hub_for
from trading.backends import RedisBus, bus

from .conftest import ledger_snapshot
from .signing import now_ms
from .test_streams import auth_message, connect, op, place, receive, run, signed_in, subscribed_to_the_book

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.mark.parametrize("frame,code", [
    ("[" * 7000 + "]" * 7000, "INVALID_REQUEST"),  # 14 KB of nesting: once a RecursionError
    ('{"op": "ping", "op": "subscribe"}', "INVALID_REQUEST"),  # a duplicate key
    ('{"op": "ping", "n": NaN}', "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": [{"name": "orderbook", "pair": "BTC\\u0000"}]}', "UNKNOWN_PAIR"),
    ('{"op": "subscribe", "channels": [{"name": "trades", "pair": "BTC-USD\\u0000"}]}', "UNKNOWN_PAIR"),
    ('{"op": "subscribe", "channels": [{"name": "ticker", "pair": " BTC-USD"}]}', "UNKNOWN_PAIR"),
    ('{"op": "subscribe", "channels": [{"name": "ticker", "pair": "BTC-USD\\n"}]}', "UNKNOWN_PAIR"),
    ('{"op": "subscribe", "channels": [{"name": "ticker", "pair": "BTC-\\u0663"}]}', "UNKNOWN_PAIR"),
    ('{"op": "unsubscribe", "channels": [{"name": "trades", "pair": "BTC\\u0000USD"}]}', "UNKNOWN_PAIR"),
    ('{"op": "subscribe", "channels": [{"name": "orders\\u0000"}]}', "INVALID_REQUEST"),
])
def test_bad_input_gets_a_coded_error_never_reaches_the_database_and_the_connection_stays(markets, frame, code,
                                                                                         monkeypatch):
    looked_up = []
    access_market = consumers.access_market
    monkeypatch.setattr(consumers, "access_market", lambda pair, **kw: looked_up.append(pair) or access_market(pair, **kw))
    before = ledger_snapshot()

    async def body():
        ws = await connect()
        await ws.send_to(text_data=frame)
        error = await receive(ws)
        await op(ws, op="ping")
        after = await receive(ws)  # a pong, not a "subscribed"
        await ws.disconnect()
        return error, after

    error, after = run(body)

    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert after == {"type": "pong"}
    assert looked_up == []
    assert ledger_snapshot() == before


def test_a_connection_sending_past_its_allowance_is_refused_each_message_until_it_refills(markets, settings):
    # A slow refill, so that the test's own pace cannot refill the bucket between two messages.
    settings.WS_MESSAGE_BURST, settings.WS_MESSAGES_PER_SECOND = 3, 0.5
    subscribe = {"op": "subscribe", "channels": [{"name": "trades", "pair": "BTC-USD"}]}

    async def body():
        ws = await connect()
        for _ in range(3):
            await op(ws, op="ping")
        pongs = [await receive(ws, "pong") for _ in range(3)]
        await op(ws, **subscribe)
        refused = await receive(ws)
        await op(ws, op="ping")
        refused_again = await receive(ws)
        await asyncio.sleep(refused_again["details"]["retry_after"] + 0.1)
        await op(ws, **subscribe)
        taken = await receive(ws)
        await ws.disconnect()
        return pongs, refused, refused_again, taken

    pongs, refused, refused_again, taken = run(body)

    assert pongs == [{"type": "pong"}] * 3
    assert refused["type"] == "error" and refused["code"] == "RATE_LIMITED" and refused["op"] is None
    assert 0 < refused["details"]["retry_after"] <= 2
    assert refused_again["code"] == "RATE_LIMITED"  # a refused message does not count, nor is it read
    assert taken == {"type": "subscribed", "channel": "trades", "pair": "BTC-USD"}  # not subscribed before


@pytest.mark.parametrize("overrides", [
    {"key": "hkt_live_\u0000"},
    {"key": " hkt_live_x"},
    {"timestamp": True},
    {"timestamp": -1},
    {"timestamp": "\u0661\u0667\u0661\u0664\u0665\u0662\u0661\u0666\u0660\u0660\u0660\u0660\u0660"},  # Arabic-Indic
    {"timestamp": f"{now_ms()}\n"},
    {"nonce": "abcdefgh\u0000"},
    {"signature": 1.5},
])
def test_auth_fields_must_be_plain_strings_or_integers(markets, alice, overrides):
    key, secret = create_api_key(alice, label="a", scope="read_only", ip_allowlist=[])

    async def body():
        ws = await connect()
        await op(ws, **auth_message(key.public_id, secret, **overrides))
        error = await receive(ws)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        refused = await receive(ws)  # still not signed in
        await ws.disconnect()
        return error, refused

    error, refused = run(body)

    assert error["type"] == "error" and error["code"] == "MISSING_AUTH_HEADERS"
    assert refused["code"] == "AUTHENTICATION_REQUIRED"


def test_auth_takes_an_integer_timestamp(markets, alice):
    key, secret = create_api_key(alice, label="a", scope="read_only", ip_allowlist=[])
    message = auth_message(key.public_id, secret)

    async def body():
        ws = await connect()
        await op(ws, **{**message, "timestamp": int(message["timestamp"])})
        reply = await receive(ws)
        await ws.disconnect()
        return reply

    assert run(body)["type"] == "authenticated"


async def no_hub(self) -> None:
    return None


def test_private_events_a_full_channel_drops_are_reported_and_private_messages_are_numbered(markets, alice,
                                                                                          monkeypatch):
    capacity = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("capacity", 100)
    dropped = 10
    entered, released = threading.Event(), threading.Event()
    read_orders = consumers.StreamConsumer.read_orders

    def held(self, order_ids):  # the connection is stuck reading its first event back: its channel fills up
        entered.set()
        released.wait(timeout=30)
        return read_orders(self, order_ids)

    monkeypatch.setattr(consumers.StreamConsumer, "read_orders", held)
    # On Redis a channel fills (and the layer drops) only while nothing in the process receives: the
    # process's hub, once started, would move the connection's messages into channels_redis' local
    # buffer as they come. This connection has private channels only, so the hub is held back.
    monkeypatch.setattr(StreamHub, "start_once", no_hub)

    def publish(order_id: int, times: int) -> None:
        for _ in range(times):
            publishing.publish_account_changes(None, alice.pk, order_ids=[order_id])

    async def body():
        order, _ = await place(alice, side="buy", type="limit", price=Decimal("100"), size=Decimal("0.01"))
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        await asyncio.to_thread(publish, order.pk, 1)
        await asyncio.to_thread(entered.wait, 10)
        await asyncio.to_thread(publish, order.pk, capacity + dropped)  # fills the channel, then is dropped
        released.set()
        messages = [await receive(ws, "orders", timeout=10) for _ in range(1 + capacity)]
        await asyncio.to_thread(publish, order.pk, 1)
        after = await receive(ws, timeout=10)  # at once; the gap it shows is reported after the grace period
        error = await receive(ws, timeout=10)
        await ws.disconnect()
        return messages, error, after

    messages, error, after = run(body)

    assert [m["seq"] for m in messages] == list(range(1, capacity + 2))
    assert error["type"] == "error" and error["code"] == "PRIVATE_EVENTS_LOST" and "GET /v1/orders" in error["message"]
    assert error["details"]["received"] - error["details"]["expected"] == dropped
    assert after["type"] == "orders" and after["seq"] == capacity + 2  # and the stream carries on


def test_account_events_a_moment_out_of_order_are_not_reported_and_a_restarted_numbering_is(markets, alice):
    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        group = f"account.{alice.pk}"
        seen = []
        for number in (7, 9, 8, 10, 3, 4):  # 8 late; then the numbering restarts
            await ws.send_input({"type": "account.changes", "account": alice.pk, "event": number, "orders": [],
                                 "fills": [], "group": group})
        await op(ws, op="ping")
        while not seen or seen[-1]["type"] != "pong":
            seen.append(await receive(ws))
        await ws.disconnect()
        return seen

    errors = [m["details"] for m in run(body) if m["type"] == "error"]

    assert errors == [{"expected": 11, "received": 3}]


def test_a_gap_whose_event_waits_behind_a_slow_handling_is_not_reported(markets, alice, monkeypatch):
    """Event 3 arrives just before 2 (the web process and the matcher publishing at once), and reading event
    3's order takes the connection longer than the grace (a busy machine): event 2, waiting behind it, is
    taken within the grace counted from then, and no loss is reported."""
    monkeypatch.setattr(settings, "WS_HEARTBEAT_SECONDS", 0.2)  # gaps looked at every 0.05 s
    read_orders = consumers.StreamConsumer.read_orders

    def slow(self, order_ids):
        if self.state.account_events.last == 3:
            time.sleep(GRACE_SECONDS * 2)
        return read_orders(self, order_ids)

    monkeypatch.setattr(consumers.StreamConsumer, "read_orders", slow)

    async def body():
        order, _ = await place(alice, side="buy", type="limit", price=Decimal(100), size=Decimal("0.01"))
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        for number in (1, 3, 2):
            await ws.send_input({"type": "account.changes", "account": alice.pk, "event": number,
                                 "orders": [order.pk], "fills": [], "group": f"account.{alice.pk}"})
        await asyncio.sleep(GRACE_SECONDS * 2)  # a report would be due by now
        await op(ws, op="ping")
        seen = []
        while not seen or seen[-1]["type"] != "pong":
            seen.append(await receive(ws, timeout=10))
        await ws.disconnect()
        return seen

    seen = [message for message in run(body) if message["type"] != "heartbeat"]

    assert [(m["type"], m.get("seq")) for m in seen] == [("orders", 1), ("orders", 2), ("orders", 3), ("pong", None)]


def test_an_account_event_sent_twice_is_delivered_once(markets, alice):
    """A send retried after a lost reply (Bus.send_in_order) arrives twice with one number."""
    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        event = {"type": "account.changes", "account": alice.pk, "event": 41, "orders": [1], "fills": [],
                 "rendered": {"orders": [{"order_id": 1}], "fills": []}, "group": f"account.{alice.pk}"}
        for number in (41, 41, 42):
            await ws.send_input({**event, "event": number})
        await op(ws, op="ping")
        seen = []
        while not seen or seen[-1]["type"] != "pong":
            seen.append(await receive(ws))
        await ws.disconnect()
        return seen

    assert [(m["type"], m.get("seq")) for m in run(body)] == [("orders", 1), ("orders", 2), ("pong", None)]


def test_a_batchs_account_events_go_out_unnumbered_when_their_numbering_fails(markets, alice, bob, monkeypatch):
    """The round trip that numbers them failing once (a connection reset): the fill still reaches the
    account, and the next event's number follows with no loss reported."""
    numbering = type(bus()).number_account_events
    failed = []

    def failing_once(self, account_ids, trip):
        if account_ids and not failed:
            failed.append(account_ids)
            reply = Reply()
            reply.error = redis.exceptions.ConnectionError("Connection reset by peer")
            return reply
        return numbering(self, account_ids, trip)

    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "fills"}])
        await receive(ws, "subscribed")
        await place(bob, side="buy", type="limit", price=Decimal(62000), size=Decimal(1))
        monkeypatch.setattr(type(bus()), "number_account_events", failing_once)
        await place(alice, side="sell", type="limit", price=Decimal(62000), size=Decimal("0.3"))
        first = await asyncio.wait_for(receive(ws, "fills"), 10)  # heartbeats would keep receive() waiting
        monkeypatch.setattr(type(bus()), "number_account_events", numbering)
        await place(alice, side="sell", type="limit", price=Decimal(62000), size=Decimal("0.2"))
        second = await asyncio.wait_for(receive(ws, "fills"), 10)
        await asyncio.sleep(2.5)  # past the grace a late event is given before a gap is reported
        await op(ws, op="ping")
        rest = []
        while not rest or rest[-1]["type"] != "pong":
            rest.append(await receive(ws))
        await ws.disconnect()
        return first, second, rest

    first, second, rest = run(body)

    assert failed
    assert [fill["size"] for fill in first["fills"]] == ["0.30000000"]
    assert [fill["size"] for fill in second["fills"]] == ["0.20000000"]
    assert [m for m in rest if m["type"] == "error"] == []


@pytest.mark.skipif(not settings.REDIS_URL, reason="account events are numbered in Redis")
def test_an_account_event_no_connection_receives_takes_no_number(markets, alice):
    counter = f"account-events:{alice.pk}"
    get_redis().delete(counter)
    publishing.publish_account_changes(None, alice.pk, order_ids=[1])  # no connection on its private channels
    unnumbered = get_redis().get(counter)

    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        await asyncio.to_thread(publishing.publish_account_changes, None, alice.pk, order_ids=[1])
        message = await receive(ws, "orders", timeout=10)
        await ws.disconnect()
        return message

    assert unnumbered is None
    assert run(body)["seq"] == 1 and get_redis().get(counter) == b"1"


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis bus")
def test_an_event_no_connection_follows_is_not_handed_to_the_publishers_loop(markets, alice):
    fresh = RedisBus()
    fresh.send_if_followed(*publishing.account_changes(alice.pk, [1]))
    started_by_unfollowed = fresh.loop is not None

    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        await asyncio.to_thread(fresh.send_if_followed, *publishing.account_changes(alice.pk, [1]))
        message = await receive(ws, "orders", timeout=10)
        await ws.disconnect()
        return message

    try:
        message = run(body)
    finally:
        if fresh.loop is not None:
            fresh.loop.call_soon_threadsafe(fresh.loop.stop)
    assert not started_by_unfollowed
    assert message["type"] == "orders" and fresh.loop is not None


def test_a_heartbeat_waiting_when_the_hub_resumes_stays_degraded_until_the_connection_has_resumed(markets, alice):
    """After a channel-layer outage the hub joins its groups again, then each connection joins its account
    group again in its own turn: a heartbeat handled before that turn must not tell the client the stream
    is whole, since an event published meanwhile would not reach it."""
    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        hub = hub_for(get_channel_layer())
        [connection] = [c for c in hub.connections if c.state.account_id == alice.pk]
        hub.interrupt("a test")
        during = await receive(ws, "heartbeat")
        connection.queue_heartbeat()  # waiting in the connection's queue as the hub resumes
        hub.resume()
        after = [await receive(ws, "heartbeat") for _ in range(2)]
        await ws.disconnect()
        return during, after

    during, after = run(body)

    assert during["degraded"] is True
    assert [heartbeat["degraded"] for heartbeat in after] == [True, False]


def test_a_resume_that_cannot_join_the_account_group_again_stays_degraded_and_is_tried_again(markets, alice,
                                                                                             monkeypatch):
    """The layer failing again at the connection's resume (both tries of its account group's join): the
    heartbeat stays degraded, since the account's events would not reach the connection, and the resume
    is made again a moment later, when the join succeeds: the client is told to reconcile, and only then
    that the stream is whole."""
    monkeypatch.setattr(consumers, "RESUME_RETRY_SECONDS", 0.2)
    group = f"account.{alice.pk}"

    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        layer = get_channel_layer()
        hub = hub_for(layer)
        [connection] = [c for c in hub.connections if c.state.account_id == alice.pk]
        hub.interrupt("a test")
        await receive(ws, "heartbeat")
        await layer.group_discard(group, connection.channel_name)  # forgotten with the layer's groups
        group_add, joins = layer.group_add, []

        async def failing_twice(name, channel):
            joins.append(name)
            if name == group and joins.count(group) <= 2:
                raise redis.exceptions.ConnectionError("the layer failed again")
            return await group_add(name, channel)

        monkeypatch.setattr(layer, "group_add", failing_twice)
        hub.resume()
        seen = []
        while not seen or seen[-1] != {"type": "heartbeat", "sequences": {}, "degraded": False}:
            seen.append(await receive(ws, timeout=10))
        await layer.group_send(group, {"type": "account.changes", "account": alice.pk, "event": 1, "orders": [],
                                       "fills": [], "group": group})
        await op(ws, op="ping")
        after = await receive(ws)
        await ws.disconnect()
        return seen, joins, after

    seen, joins, after = run(body)

    assert [m["type"] if m["type"] != "heartbeat" else m["degraded"] for m in seen] == [True, "error", False]
    assert seen[1]["code"] == "PRIVATE_EVENTS_LOST"
    assert joins.count(group) == 3
    assert after == {"type": "pong"}


def database_down(*args, **kwargs):
    raise OperationalError("server closed the connection unexpectedly")


def book_members() -> int:
    group = hub_for(get_channel_layer()).groups.get("book.BTC-USD")
    return 0 if group is None else len(group.slow) + len(group.direct)


def a_delta_after_a_gap(sequence: int) -> dict:
    return {"type": "book.delta", "group": "book.BTC-USD", "pair": "BTC-USD", "sequence": sequence,
            "text": json.dumps({"type": "delta", "sequence": sequence, "bids": [], "asks": [], "checksum": 0})}


def test_a_database_blip_while_reading_an_accounts_orders_is_announced_and_the_connection_carries_on(
        markets, alice, monkeypatch):
    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        with monkeypatch.context() as patched:  # the publisher cannot render the orders, nor the connection read them
            patched.setattr(publishing, "render_orders", database_down)
            patched.setattr(consumers, "render_orders", database_down)
            await place(alice, side="sell", type="limit", price=Decimal(63100), size=Decimal("0.3"))
            lost = await receive(ws, "error", timeout=10)
        await op(ws, op="ping")
        pong = await receive(ws, "pong")
        await ws.disconnect()
        return lost, pong

    lost, pong = run(body)

    assert lost["code"] == "PRIVATE_EVENTS_LOST" and lost["details"] == {"reason": "an event could not be read"}
    assert pong == {"type": "pong"}


def test_a_database_blip_while_repairing_a_books_gap_leaves_the_connection_subscribed(markets, alice, monkeypatch):
    async def body():
        ws, snapshot, _ = await subscribed_to_the_book(alice)
        with monkeypatch.context() as patched:
            patched.setattr(streams, "book_snapshot", database_down)
            await get_channel_layer().group_send("book.BTC-USD", a_delta_after_a_gap(snapshot["sequence"] + 5))
            await asyncio.sleep(0.5)
        await op(ws, op="ping")
        pong = await receive(ws, "pong")
        members = book_members()
        await ws.disconnect()
        return pong, members

    assert run(body) == ({"type": "pong"}, 1)


def test_a_connection_that_fails_unexpectedly_leaves_the_hubs_groups(markets, alice, monkeypatch):
    """Whatever ends it, a connection is no longer relayed its groups' messages."""
    async def failing(self, message):
        raise RuntimeError("a bug")

    async def body():
        ws, snapshot, _ = await subscribed_to_the_book(alice)
        subscribed = book_members()
        monkeypatch.setattr(consumers.StreamConsumer, "deliver", failing)
        monkeypatch.setattr(consumers.StreamConsumer, "delivery_failed", failing)
        await get_channel_layer().group_send("book.BTC-USD", a_delta_after_a_gap(snapshot["sequence"] + 5))
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(ws.future, 5)
        return subscribed, book_members()

    assert run(body) == (1, 0)


def test_a_connection_whose_connect_fails_ends_with_that_error(markets, monkeypatch):
    """Its clean-up (leaving what it joined) must not replace the error that ended it."""
    def failing(self, consumer):
        raise RuntimeError("attach failed")

    monkeypatch.setattr(StreamHub, "attach", failing)

    async def body():
        ws = await connect()
        with pytest.raises(RuntimeError, match="attach failed"):
            await asyncio.wait_for(ws.future, 5)

    run(body)
