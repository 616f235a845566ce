"""The WebSocket consumer, through Channels' communicator, with the real matcher publishing."""

import asyncio
import contextlib
import json
import secrets
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from accounts.keys import create_api_key, prehash, sign
from exchange.asgi import application
from exchange.checksum import book_checksum
from exchange.net import trusted_proxies
from exchange.redis import Reply, RoundTrip
from marketdata import publishing, replay, replay_backends
from marketdata.consumers import MAX_MESSAGE_BYTES
from trading import services
from trading.models import Asset
from trading.orders import OrderRequest
from wallets.deposits import credit_deposit
from wallets.transfers import TransferRequest, make_transfer

from .signing import now_ms

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
D = Decimal


def run(coroutine_function):
    """Run an async test body on an event loop (the communicator is async; the suite is not)."""
    return async_to_sync(coroutine_function)()


async def connect(address="127.0.0.1"):
    communicator = WebsocketCommunicator(application, "/v1/ws")
    communicator.scope["client"] = (address, 50000)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive(communicator, type_=None, timeout=3):
    """The next message (of ``type_``, skipping others such as heartbeats) within ``timeout`` seconds in
    all: heartbeats that keep coming must not keep a test waiting for ever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"no {type_ or 'message'} within {timeout} s")
        message = json.loads(await communicator.receive_from(timeout=remaining))
        if type_ is None or message["type"] == type_:
            return message


async def op(communicator, **message):
    await communicator.send_to(text_data=json.dumps(message))


def place(account, **fields):
    return database_sync_to_async(services.place_order)(account, OrderRequest(pair="BTC-USD", **fields))


async def subscribed_to_the_book(seller):
    """A connection subscribed to BTC-USD's book, which holds one ask (63,100): (socket, its snapshot, the ask)."""
    order, _ = await place(seller, side="sell", type="limit", price=D("63100"), size=D("1"))
    ws = await connect()
    await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD"}])
    return ws, await receive(ws, "snapshot"), order


@pytest.fixture
def traders(funded):
    return [funded(name, USD="1000000", BTC="100") for name in ("alice", "bob")]


def apply(book: dict, message: dict) -> None:
    for side in ("bids", "asks"):
        for price, size in message[side]:
            if size.strip("0.") == "":
                book[side].pop(D(price), None)
            else:
                book[side][D(price)] = (price, size)


def levels(book: dict, side: str) -> list[list[str]]:
    return [list(book[side][p]) for p in sorted(book[side], reverse=side == "bids")]


@pytest.mark.parametrize("frame,code", [
    ("not json", "INVALID_REQUEST"),
    ("[1, 2]", "INVALID_REQUEST"),
    ('{"op": "dance"}', "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": [{"name": "gossip", "pair": "BTC-USD"}]}', "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": []}', "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": [{"name": "trades"}]}', "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": [{"name": "trades", "pair": "DOGE-USD"}]}', "UNKNOWN_PAIR"),
    ('{"op": "subscribe", "channels": [{"name": "orders"}]}', "AUTHENTICATION_REQUIRED"),
    # A candles subscription needs an interval of GET /v1/candles.
    ('{"op": "subscribe", "channels": [{"name": "candles", "pair": "BTC-USD"}]}', "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": [{"name": "candles", "pair": "BTC-USD", "interval": "2m"}]}', "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": [{"name": "candles", "pair": "BTC-USD", "interval": 60}]}', "INVALID_REQUEST"),
    ('{"op": "auth", "key": "hkt_live_x"}', "MISSING_AUTH_HEADERS"),
    ('{"op": "ping", "pad": "' + "x" * MAX_MESSAGE_BYTES + '"}', "MESSAGE_TOO_LARGE"),
    # The limit is in UTF-8 bytes, not characters: three bytes each.
    ('{"op": "ping", "pad": "' + "\u20ac" * (MAX_MESSAGE_BYTES // 3) + '"}', "MESSAGE_TOO_LARGE"),
    ('{"op": []}', "INVALID_REQUEST"),
    ('{"op": {"a": 1}}', "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": [{"name": ["orderbook"], "pair": "BTC-USD"}]}', "INVALID_REQUEST"),
    # Refused before anything is joined: the next message is the pong, not a "subscribed".
    ('{"op": "subscribe", "channels": [{"name": "orderbook", "pair": "BTC-USD", "since_sequence": "5"}]}',
     "INVALID_REQUEST"),
    ('{"op": "subscribe", "channels": [{"name": "orderbook", "pair": "BTC-USD"}], "since_sequence": true}',
     "INVALID_REQUEST"),
])
def test_bad_messages_get_an_error_with_a_code_and_the_connection_stays(markets, frame, code):
    async def body():
        ws = await connect()
        await ws.send_to(text_data=frame)
        error = await receive(ws)
        await op(ws, op="ping")
        pong = await receive(ws)
        await ws.disconnect()
        return error, pong

    error, pong = run(body)

    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert pong == {"type": "pong"}


def test_orderbook_snapshot_then_deltas_rebuild_the_committed_book(api, markets, traders):
    alice, bob = traders

    async def body():
        await place(alice, side="sell", type="limit", price=D("63010"), size=D("1"))
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "btc-usd"}])
        assert (await receive(ws)) == {"type": "subscribed", "channel": "orderbook", "pair": "BTC-USD"}
        snapshot = await receive(ws, "snapshot")
        book = {"bids": {}, "asks": {}}
        apply(book, snapshot)
        assert snapshot["checksum"] == book_checksum(levels(book, "bids"), levels(book, "asks"))
        await place(bob, side="buy", type="limit", price=D("63000"), size=D("0.5"))
        await place(bob, side="buy", type="limit", price=D("63020"), size=D("0.25"))  # trades 0.25 at 63,010
        await place(alice, side="sell", type="limit", price=D("63000"), size=D("0.1"))
        sequence = snapshot["sequence"]
        for _ in range(3):
            delta = await receive(ws, "delta")
            assert delta["sequence"] == sequence + 1
            sequence = delta["sequence"]
            apply(book, delta)
            assert delta["checksum"] == book_checksum(levels(book, "bids"), levels(book, "asks"))
        await ws.disconnect()
        return book, sequence

    book, sequence = run(body)

    rest = api.get("/v1/orderbook/BTC-USD").json()
    assert rest["sequence"] == sequence
    assert rest["bids"] == levels(book, "bids") == [["63000.00", "0.40000000"]]
    assert rest["asks"] == levels(book, "asks") == [["63010.00", "0.75000000"]]


def test_resume_replays_the_deltas_missed_and_a_too_old_sequence_gets_a_snapshot(markets, traders, monkeypatch):
    monkeypatch.setattr(replay_backends, "REPLAY_DEPTH", 2)  # the buffer keeps deltas 2 and 3 of 3
    alice, _ = traders

    async def body():
        for price in ("63100", "63200", "63300"):
            await place(alice, side="sell", type="limit", price=D(price), size=D("1"))
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD", "since_sequence": 1}])
        replayed = [await receive(ws, "delta"), await receive(ws, "delta")]
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD", "since_sequence": 0}])
        fresh = await receive(ws, "snapshot")
        await ws.disconnect()
        return replayed, fresh

    replayed, fresh = run(body)

    assert [d["sequence"] for d in replayed] == [2, 3]
    assert [d["asks"] for d in replayed] == [[["63200.00", "1.00000000"]], [["63300.00", "1.00000000"]]]
    assert fresh["sequence"] == 3 and len(fresh["asks"]) == 3


def test_a_book_loaded_after_a_restore_drops_the_lost_timelines_deltas(markets, traders):
    """A restored database gives book sequences out again, and the replay buffer (Redis, kept running)
    still holds the lost timeline's deltas. The matcher that loads the book drops those past its
    sequence: new deltas are recorded and reach subscribers, and a client resuming is replayed the new
    ones, never a lost one."""
    alice, _ = traders
    trip, lost = RoundTrip(), [["99999.00", "5.00000000"]]
    for sequence in (1, 2, 3):
        replay.record_delta("BTC-USD", {
            "type": "book.delta", "group": "book.BTC-USD", "pair": "BTC-USD", "sequence": sequence,
            "text": json.dumps({"type": "delta", "channel": "orderbook", "pair": "BTC-USD", "sequence": sequence,
                                "bids": [], "asks": lost, "checksum": 0})}, trip)
    trip.run()

    async def body():
        ws, snapshot, _ = await subscribed_to_the_book(alice)  # the matcher loads the book at 0: delta 1
        await place(alice, side="sell", type="limit", price=D("63200"), size=D("1"))
        live = await receive(ws, "delta")
        resumed = await connect()
        await op(resumed, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD", "since_sequence": 1}])
        replayed = await receive(resumed, "delta")
        for socket in (ws, resumed):
            await socket.disconnect()
        return snapshot, live, replayed

    snapshot, live, replayed = run(body)

    assert snapshot["sequence"] == 1
    assert (live["sequence"], live["asks"]) == (2, [["63200.00", "1.00000000"]])
    assert replayed == live
    assert [m["sequence"] for m in replay.buffer().since("BTC-USD", 0)] == [1, 2]


def test_a_resume_the_buffer_cannot_serve_gets_a_snapshot(markets, traders):
    """The buffer emptied (a restart, Redis flushed) or a sequence from the future: never silence."""
    alice, _ = traders

    async def body():
        for price in ("63100", "63200", "63300"):
            await place(alice, side="sell", type="limit", price=D(price), size=D("1"))
        await database_sync_to_async(replay.buffer().reset)()
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD", "since_sequence": 1}])
        after_restart = await receive(ws, "snapshot")
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD", "since_sequence": 9}])
        from_the_future = await receive(ws, "snapshot")
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD", "since_sequence": 3}])
        await op(ws, op="ping")
        up_to_date = [await receive(ws), await receive(ws)]
        await ws.disconnect()
        return after_restart, from_the_future, up_to_date

    after_restart, from_the_future, up_to_date = run(body)

    assert after_restart["sequence"] == from_the_future["sequence"] == 3 and len(after_restart["asks"]) == 3
    assert [m["type"] for m in up_to_date] == ["subscribed", "pong"]  # at the committed sequence: nothing to send




def test_a_delta_lost_before_a_quiet_spell_is_repaired_before_the_heartbeat(markets, traders, settings, monkeypatch):
    """The matcher died between its commit and the publication: the heartbeat must not claim the
    committed sequence the client was never sent; the server resynchronises first."""
    settings.WS_HEARTBEAT_SECONDS = 0.3
    alice, _ = traders

    async def body():
        ws, snapshot, _ = await subscribed_to_the_book(alice)
        monkeypatch.setattr(publishing, "send_batch", lambda result: None)  # committed, never published
        await place(alice, side="sell", type="limit", price=D("63200"), size=D("1"))
        monkeypatch.undo()
        seen = []
        while not seen or seen[-1]["type"] != "heartbeat":
            seen.append(await receive(ws, timeout=5))
        await ws.disconnect()
        return snapshot, seen

    snapshot, seen = run(body)

    repaired, heartbeat = seen[-2], seen[-1]
    assert repaired["type"] == "snapshot" and repaired["sequence"] == snapshot["sequence"] + 1
    assert [level[0] for level in repaired["asks"]] == ["63100.00", "63200.00"]
    assert heartbeat["sequences"] == {"BTC-USD": repaired["sequence"]}


def test_a_quiet_books_lost_delta_is_repaired_while_another_book_of_the_connection_is_busy(
        markets, traders, settings, monkeypatch):
    """The connection's ETH-USD book moves more often than the heartbeat interval: BTC-USD's lost delta is
    repaired all the same, by a heartbeat due to the BTC-USD book's own quiet."""
    settings.WS_HEARTBEAT_SECONDS = 0.3
    alice, _ = traders
    place_eth = database_sync_to_async(services.place_order)

    async def body():
        ws, snapshot, _ = await subscribed_to_the_book(alice)
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "ETH-USD"}])
        await receive(ws, "snapshot")
        monkeypatch.setattr(publishing, "send_batch", lambda result: None)  # committed, never published
        await place(alice, side="sell", type="limit", price=D("63200"), size=D("1"))
        monkeypatch.undo()
        seen, loop = [], asyncio.get_running_loop()
        deadline = loop.time() + 3
        for price in range(3000, 2900, -1):  # an ETH-USD delta every few tens of ms
            await place_eth(alice, OrderRequest(pair="ETH-USD", side="buy", type="limit", price=D(price),
                                                size=D("0.01")))
            while not await ws.receive_nothing(timeout=0.01):
                seen.append(json.loads(await ws.receive_from()))
            if loop.time() > deadline or any(m.get("pair") == "BTC-USD" for m in seen):
                break
        await ws.disconnect()
        return snapshot, seen

    snapshot, seen = run(body)

    btc = [(m["type"], m["sequence"]) for m in seen if m.get("pair") == "BTC-USD"]
    assert btc == [("snapshot", snapshot["sequence"] + 1)], btc
    assert sum(m["type"] == "delta" for m in seen) >= 5  # ETH-USD was busy throughout


def test_streams_outlive_the_channel_layers_group_expiry(markets, traders, monkeypatch, settings):
    """Channel layers drop a group member a day after it joined; members renew (here within 0.2 s of
    a 1 s expiry) so a long-lived subscription keeps receiving."""
    from marketdata import consumers, hub

    monkeypatch.setattr(hub, "GROUP_REFRESH_SECONDS", 0.2)
    monkeypatch.setattr(consumers, "GROUP_REFRESH_SECONDS", 0.2)
    settings.WS_HEARTBEAT_SECONDS = 0.2  # the connection's upkeep runs every quarter of it
    layer = get_channel_layer()
    monkeypatch.setattr(layer, "group_expiry", 1)
    alice, _ = traders

    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD"}, {"name": "orders"}])
        snapshot = await receive(ws, "snapshot")
        await asyncio.sleep(2.5)
        await place(alice, side="sell", type="limit", price=D("63100"), size=D("1"))
        delta, orders = await receive(ws, "delta"), await receive(ws, "orders")
        await ws.disconnect()
        return snapshot, delta, orders

    snapshot, delta, orders = run(body)

    assert delta["sequence"] == snapshot["sequence"] + 1
    assert orders["orders"][0]["price"] == "63100.00"


def test_a_removed_level_is_sent_with_size_0(markets, traders):
    alice, _ = traders

    async def body():
        ws, _, order = await subscribed_to_the_book(alice)
        await database_sync_to_async(services.request_cancel)(alice, order.pk)
        delta = await receive(ws, "delta")
        await ws.disconnect()
        return delta

    assert run(body)["asks"] == [["63100.00", "0"]]


def test_a_socket_signed_in_with_a_key_revoked_later_is_closed_with_the_reason(markets, traders, monkeypatch):
    from accounts.keys import revoke_api_keys
    from accounts.models import ApiKey
    from marketdata import consumers

    monkeypatch.setattr(consumers, "KEY_RECHECK_SECONDS", 0.1)
    alice, _ = traders

    async def body():
        ws, key = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        await database_sync_to_async(revoke_api_keys)(ApiKey.objects.filter(pk=key.pk))
        error = await receive(ws, "error")
        closed = await ws.receive_output(timeout=3)
        return error, closed

    error, closed = run(body)

    assert error["code"] == "API_KEY_REVOKED"
    assert closed == {"type": "websocket.close", "code": 4003, "reason": "This API key has been revoked."}


def test_an_address_past_its_connections_is_told_and_closed_and_a_closed_one_makes_room(markets, settings):
    settings.WS_CONNECTIONS_PER_ADDRESS = 2

    async def body():
        held = [await connect("203.0.113.9"), await connect("203.0.113.9")]
        third = WebsocketCommunicator(application, "/v1/ws")
        third.scope["client"] = ("203.0.113.9", 50001)
        accepted, _ = await third.connect()  # accepted only to be told why it closes
        error = await receive(third, "error")
        closed = await third.receive_output(timeout=3)
        elsewhere = await connect("198.51.100.1")  # counted apart
        await held[0].disconnect()
        again = await connect("203.0.113.9")  # the closed one's room
        await op(again, op="ping")
        pong = await receive(again, "pong")
        for ws in (held[1], elsewhere, again):
            await ws.disconnect()
        return accepted, error, closed, pong

    accepted, error, closed, pong = run(body)

    assert accepted and error["code"] == "RATE_LIMITED" and "At most 2 connections" in error["message"]
    assert closed == {"type": "websocket.close", "code": 4029, "reason": error["message"]}
    assert pong["type"] == "pong"


def test_a_cancelled_connection_gives_its_address_its_room_back_and_leaves_its_groups(markets, settings):
    from marketdata.hub import hub_for

    settings.WS_CONNECTIONS_PER_ADDRESS = 2

    async def body():
        gone = await connect("203.0.113.9")
        await op(gone, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD"}])
        await receive(gone, "snapshot")
        hub = hub_for(get_channel_layer())
        joined = len(hub.groups["book.BTC-USD"].slow) + len(hub.groups["book.BTC-USD"].direct)
        # As Daphne cancels a consumer still running once its client has left (application_close_timeout,
        # 10 s): by then its read of its channel is long under way (a read cancelled in its first
        # milliseconds is the next test's).
        await asyncio.sleep(1)
        gone.future.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone.future
        await asyncio.sleep(0.1)  # for the group it emptied to be left at the layer
        still_joined = "book.BTC-USD" in hub.groups
        held = [await connect("203.0.113.9"), await connect("203.0.113.9")]
        pongs = []
        for ws in held:
            await op(ws, op="ping")
            pongs.append((await receive(ws, "pong"))["type"])
            await ws.disconnect()
        return joined, still_joined, pongs

    # Left in the group, it would be relayed every delta of the book for good.
    assert run(body) == (1, False, ["pong", "pong"])


def test_connections_cancelled_in_their_first_milliseconds_end_and_leave_no_channel_read(markets):
    """Daphne cancels a consumer whose client has gone. With the Redis layer, a channel read cancelled
    during its connection's first commands (about 1-3 ms in) can lose the cancellation and go on for
    good: the consumer must end all the same, and its read with it (StreamConsumer.stop_reading)."""

    async def body():
        pools = getattr(get_channel_layer(), "_layers", {})  # channels_redis's, by event loop
        ended, tasks_left = [], []
        for trial in range(24):
            # Each read opens its Redis connection, as after a Redis restart: this loop's pool is emptied
            # (the layer's close_pools would reach the pools of the other tests' loops too).
            if asyncio.get_running_loop() in pools:
                await pools[asyncio.get_running_loop()].flush()
            communicator = WebsocketCommunicator(application, "/v1/ws")
            consumer = communicator.future  # started: it reads its channel
            await asyncio.sleep(trial * 0.000125)
            consumer.cancel()
            done, _ = await asyncio.wait([consumer], timeout=5)
            ended.append(bool(done))
            await asyncio.sleep(0.05)  # for a read ended by a message to take it
            tasks_left.append(len(asyncio.all_tasks() - {asyncio.current_task()}))
        return ended, tasks_left

    ended, tasks_left = run(body)

    assert all(ended), ended
    assert not any(tasks_left), tasks_left


def test_a_read_that_loses_its_cancellation_is_ended_even_when_its_consumer_is_cancelled_meanwhile():
    """A read that swallows one cancellation (as asyncio.wait_for may on Python 3.11) is cancelled again, and
    its consumer ending under a cancellation of its own (the server's close timeout, a closing event loop)
    still ends it first: left behind, it would lose that one cancellation too, now and then, and read on."""
    from marketdata.consumers import StreamConsumer

    async def read_that_loses_one_cancellation():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await asyncio.sleep(10)

    async def body():
        consumer = StreamConsumer()
        consumer.channel_layer = get_channel_layer()
        consumer.channel_name = await consumer.channel_layer.new_channel()
        outcomes = []
        for cut_off in (None, 0.05):  # left alone; cancelled 50 ms in, as the first cancellation is lost
            read = asyncio.ensure_future(read_that_loses_one_cancellation())
            await asyncio.sleep(0)  # under way
            stopping = asyncio.ensure_future(consumer.stop_reading([read]))
            if cut_off:
                await asyncio.sleep(cut_off)
                stopping.cancel()
            await asyncio.wait([stopping], timeout=5)
            outcomes.append((stopping.done(), stopping.cancelled(), read.done()))
        return outcomes

    assert run(body) == [(True, False, True), (True, True, True)]


def test_the_hubs_relay_ends_when_a_read_returns_after_losing_its_cancellation():
    """redis-py on Python 3.11 can swallow a cancellation and return: the relay, which reads again and again,
    must still end (it is cancelled when its event loop closes)."""
    from marketdata.hub import StreamHub

    async def body():
        hub = StreamHub(layer=None)

        async def read_that_loses_its_cancellation():
            with contextlib.suppress(asyncio.CancelledError):  # as asyncio.wait_for may, on Python 3.11
                await asyncio.sleep(10)
            return []

        hub.receive = read_that_loses_its_cancellation
        relay = asyncio.create_task(hub.relay())
        await asyncio.sleep(0.01)
        relay.cancel()
        done, _ = await asyncio.wait([relay], timeout=2)
        return bool(done) and relay.cancelled()

    loop = asyncio.new_event_loop()  # not asyncio.run: its clean-up would wait for a relay that never ends
    try:
        assert loop.run_until_complete(body())
    finally:
        loop.close()


def test_a_gap_in_the_stream_makes_the_server_resynchronise(markets, traders):
    alice, _ = traders

    async def body():
        ws, snapshot, _ = await subscribed_to_the_book(alice)
        # A delta from the future, as if the ones before it had been lost on the way.
        future = snapshot["sequence"] + 5
        await get_channel_layer().group_send("book.BTC-USD", {
            "type": "book.delta", "group": "book.BTC-USD", "pair": "BTC-USD", "sequence": future,
            "text": json.dumps({"type": "delta", "sequence": future, "bids": [], "asks": [], "checksum": 0}),
        })
        resync = await receive(ws)
        await ws.disconnect()
        return snapshot, resync

    snapshot, resync = run(body)

    assert resync["type"] == "snapshot" and resync["sequence"] == snapshot["sequence"]


def test_trades_and_ticker_channels(markets, traders):
    alice, bob = traders

    async def body():
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "trades", "pair": "BTC-USD"},
                                               {"name": "ticker", "pair": "BTC-USD"}])
        first_ticker = await receive(ws, "ticker")
        await place(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
        await place(bob, side="buy", type="market", size=D("0.2"), time_in_force="IOC")
        trade = await receive(ws, "trade")
        ticker = await receive(ws, "ticker")
        await ws.disconnect()
        return first_ticker, trade, ticker

    first_ticker, trade, ticker = run(body)

    assert first_ticker["pair"] == "BTC-USD" and first_ticker["last_price"] is None
    assert {k: trade[k] for k in ("pair", "price", "size", "taker_side")} == {
        "pair": "BTC-USD", "price": "63000.00", "size": "0.20000000", "taker_side": "buy"}
    assert isinstance(trade["trade_id"], int) and isinstance(trade["time"], int)
    assert ticker["last_price"] == "63000.00"


def auth_message(key_id: str, secret: str, **overrides) -> dict:
    timestamp, nonce = str(now_ms()), secrets.token_hex(8)
    message = {"op": "auth", "key": key_id, "timestamp": timestamp, "nonce": nonce,
               "signature": sign(secret, prehash(timestamp, nonce, "GET", "/v1/ws", b""))}
    return {**message, **overrides}


async def signed_in(account):
    """A connection authenticated with a new read-only key of ``account``: (socket, key)."""
    key, secret = await database_sync_to_async(create_api_key)(account, label="a", scope="read_only", ip_allowlist=[])
    ws = await connect()
    await op(ws, **auth_message(key.public_id, secret))
    await receive(ws, "authenticated")
    return ws, key


def test_private_channels_carry_only_the_accounts_own_events(markets, traders):
    alice, bob = traders
    alice_key, alice_secret = create_api_key(alice, label="a", scope="read_only", ip_allowlist=[])

    async def body():
        ws = await connect()
        await op(ws, **auth_message(alice_key.public_id, alice_secret))
        assert (await receive(ws))["type"] == "authenticated"
        await op(ws, op="subscribe", channels=[{"name": "orders"}, {"name": "fills"}, {"name": "balances"}])
        initial_balances = await receive(ws, "balances")
        await place(bob, side="buy", type="limit", price=D("62000"), size=D("1"))  # bob's: alice must not see it
        await place(alice, side="sell", type="limit", price=D("62000"), size=D("0.3"), client_order_id="tp-1")
        seen = []
        while not (seen and seen[-1]["type"] == "fills"):
            seen.append(await receive(ws))
        await ws.disconnect()
        return initial_balances, seen

    initial_balances, seen = run(body)

    usd = next(b for b in initial_balances["balances"] if b["asset"] == "USD")
    assert usd["spot"]["available"] == "1000000.00"
    orders = [o for m in seen if m["type"] == "orders" for o in m["orders"]]
    assert orders and {o["side"] for o in orders} == {"sell"}
    assert orders[-1]["status"] == "filled"
    fills = next(m for m in seen if m["type"] == "fills")["fills"]
    assert [(f["side"], f["size"], f["liquidity"], f["client_order_id"]) for f in fills] == [
        ("sell", "0.30000000", "taker", "tp-1")]


def test_a_batchs_orders_and_fills_are_rendered_once_for_all_of_an_accounts_connections(markets, traders,
                                                                                        monkeypatch):
    """The publisher renders a matched batch's changes once for an account with private subscribers; its
    connections read nothing back. A connection given an event without them (the note of its account
    lapsed) reads them itself and renews the note."""
    from marketdata import consumers
    from trading.backends import bus

    alice, bob = traders
    reads = []
    for name in ("read_orders", "read_fills"):
        def counted(self, ids, read=getattr(consumers.StreamConsumer, name), name=name):
            reads.append(name)
            return read(self, ids)
        monkeypatch.setattr(consumers.StreamConsumer, name, counted)

    async def fills(ws) -> list[dict]:
        return (await receive(ws, "fills"))["fills"]

    async def body():
        sockets = [(await signed_in(alice))[0] for _ in range(2)]
        for ws in sockets:
            await op(ws, op="subscribe", channels=[{"name": "fills"}])
            await receive(ws, "subscribed")
        await place(bob, side="buy", type="limit", price=D("62000"), size=D("1"))
        await place(alice, side="sell", type="limit", price=D("62000"), size=D("0.3"))
        rendered = [await fills(ws) for ws in sockets]
        reads_after_rendered = list(reads)
        with monkeypatch.context() as lapsed:  # the account's note lapses
            lapsed.setattr(type(bus()), "private_subscribers", lambda self, account_ids, trip: Reply(set()))
            await place(alice, side="sell", type="limit", price=D("62000"), size=D("0.2"))
            read_back = [await fills(ws) for ws in sockets]
        reads_after_lapse = list(reads)
        await place(alice, side="sell", type="limit", price=D("62000"), size=D("0.1"))
        rendered_again = [await fills(ws) for ws in sockets]
        for ws in sockets:
            await ws.disconnect()
        return rendered, reads_after_rendered, read_back, reads_after_lapse, rendered_again

    rendered, reads_after_rendered, read_back, reads_after_lapse, rendered_again = run(body)
    assert reads_after_rendered == []
    assert rendered[0] == rendered[1] and [f["size"] for f in rendered[0]] == ["0.30000000"]
    assert reads_after_lapse == ["read_fills", "read_fills"]  # one per connection
    assert read_back[0] == read_back[1] and [f["size"] for f in read_back[0]] == ["0.20000000"]
    assert reads == reads_after_lapse  # rendered once more
    assert rendered_again[0] == rendered_again[1] and [f["size"] for f in rendered_again[0]] == ["0.10000000"]


def test_a_rendering_that_fails_leaves_the_connections_to_read_the_batch_themselves(markets, traders, monkeypatch):
    def broken(*args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(publishing, "render_fills", broken)
    alice, bob = traders

    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "fills"}])
        await receive(ws, "subscribed")
        await place(bob, side="buy", type="limit", price=D("62000"), size=D("1"))
        await place(alice, side="sell", type="limit", price=D("62000"), size=D("0.3"))
        fills = (await receive(ws, "fills"))["fills"]
        await ws.disconnect()
        return fills

    assert [f["size"] for f in run(body)] == ["0.30000000"]


def test_the_balances_channel_carries_deposits_and_transfers(markets, traders):
    alice, _ = traders

    async def body():
        ws, _ = await signed_in(alice)
        await op(ws, op="subscribe", channels=[{"name": "balances"}])
        await receive(ws, "balances")  # the balances as they were
        usd = await database_sync_to_async(Asset.objects.get)(symbol="USD")
        await database_sync_to_async(credit_deposit)(alice, usd, D("250.5"), "tx-1", "test")
        after_deposit = await receive(ws, "balances")
        await database_sync_to_async(make_transfer)(alice, TransferRequest("USD", D("100"), "spot", "earn"))
        after_transfer = await receive(ws, "balances")
        await ws.disconnect()
        return after_deposit, after_transfer

    after_deposit, after_transfer = run(body)

    def usd(message):
        return next(b for b in message["balances"] if b["asset"] == "USD")

    assert usd(after_deposit)["spot"]["available"] == "1000250.50"
    assert usd(after_transfer)["spot"]["available"] == "1000150.50"
    assert usd(after_transfer)["earn"]["available"] == "100.00"


def test_socket_auth_refusals(markets, traders):
    alice, _ = traders
    key, secret = create_api_key(alice, label="a", scope="trade", ip_allowlist=["10.0.0.0/8"])
    open_key, open_secret = create_api_key(alice, label="b", scope="trade", ip_allowlist=[])

    async def body():
        outside = await connect(address="203.0.113.9")
        await op(outside, **auth_message(key.public_id, secret))
        not_allowed = await receive(outside)
        inside = await connect(address="10.1.2.3")
        await op(inside, **auth_message(open_key.public_id, open_secret, signature="0" * 64))
        bad_signature = await receive(inside)
        await op(inside, **auth_message(open_key.public_id, open_secret, timestamp=str(now_ms() - 60_000)))
        stale = await receive(inside)
        await outside.disconnect()
        await inside.disconnect()
        return not_allowed, bad_signature, stale

    not_allowed, bad_signature, stale = run(body)

    assert not_allowed["code"] == "IP_NOT_ALLOWED" and "203.0.113.9" in not_allowed["message"]
    assert bad_signature["code"] == "INVALID_SIGNATURE"
    assert stale["code"] == "TIMESTAMP_OUT_OF_WINDOW"


def test_behind_trusted_proxies_a_socket_is_the_address_rest_would_see(markets, traders, settings):
    """Two X-Forwarded-For lines (a proxy that adds its own): read as one list, as REST reads them."""
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    trusted_proxies.cache_clear()
    alice, _ = traders
    key, secret = create_api_key(alice, label="a", scope="read_only", ip_allowlist=["203.0.113.9"])

    async def body():
        ws = WebsocketCommunicator(application, "/v1/ws", headers=[(b"x-forwarded-for", b"203.0.113.9"),
                                                                    (b"x-forwarded-for", b"127.0.0.2")])
        ws.scope["client"] = ("127.0.0.1", 50000)
        assert (await ws.connect())[0]
        await op(ws, **auth_message(key.public_id, secret))
        answer = await receive(ws)
        await ws.disconnect()
        return answer

    try:
        answer = run(body)
    finally:
        trusted_proxies.cache_clear()

    assert answer["type"] == "authenticated", answer


def test_quiet_streams_get_heartbeats_with_the_book_sequence(markets, traders, settings):
    settings.WS_HEARTBEAT_SECONDS = 0.2
    alice, _ = traders

    async def body():
        ws, snapshot, _ = await subscribed_to_the_book(alice)
        heartbeat = await receive(ws, "heartbeat", timeout=2)
        await ws.disconnect()
        return snapshot, heartbeat

    snapshot, heartbeat = run(body)

    assert heartbeat["sequences"] == {"BTC-USD": snapshot["sequence"]}


def test_public_connections_get_heartbeats_from_one_pass_and_signed_in_ones_from_their_own_upkeep(
        markets, traders, settings):
    """The hub keeps up every public-only connection in one pass; a connection that signs in leaves the pass
    and is kept up by its own task. Both get a heartbeat after each interval of quiet, not sooner."""
    from marketdata.hub import hub_for

    settings.WS_HEARTBEAT_SECONDS = 0.2
    alice, _ = traders

    async def three_heartbeats(ws):
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):
            await receive(ws, "heartbeat", timeout=2)
        return loop.time() - started

    async def body():
        public, _, _ = await subscribed_to_the_book(alice)
        private, _ = await signed_in(alice)
        await op(private, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD"}])
        await receive(private, "snapshot")
        hub = hub_for(get_channel_layer())
        kept_by_the_hub = set(hub.public_only)
        took = await asyncio.gather(three_heartbeats(public), three_heartbeats(private))
        await public.disconnect()
        await private.disconnect()
        return kept_by_the_hub, took, len(hub.public_only)

    kept_by_the_hub, took, kept_after = run(body)

    assert len(kept_by_the_hub) == 1 and next(iter(kept_by_the_hub)).key_id is None and kept_after == 0
    # The first heartbeat may come at once (the snapshot was an interval ago); the next two an interval apart each.
    assert all(0.35 <= seconds < 2 for seconds in took), took


def test_subscription_limit(markets):
    async def body():
        ws = await connect()
        channels = [{"name": "trades", "pair": "BTC-USD"}] + [{"name": "ticker", "pair": p} for p in
                                                             ("BTC-USD", "ETH-USD", "ETH-BTC")]
        await op(ws, op="subscribe", channels=channels * 1)
        acks = [await receive(ws, "subscribed") for _ in range(4)]
        from marketdata import consumers

        consumers.MAX_SUBSCRIPTIONS, limit = 4, consumers.MAX_SUBSCRIPTIONS
        try:
            await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "ETH-USD"}])
            error = await receive(ws, "error")
        finally:
            consumers.MAX_SUBSCRIPTIONS = limit
        await ws.disconnect()
        return acks, error

    acks, error = run(body)

    assert len(acks) == 4 and error["code"] == "SUBSCRIPTION_LIMIT"


def test_a_connection_whose_handlers_fall_behind_is_cut_off_as_a_slow_consumer(markets, monkeypatch):
    from marketdata import consumers

    monkeypatch.setattr(consumers, "MAX_QUEUED_STREAM_MESSAGES", 3)

    async def slow_handler(self, event):
        await asyncio.sleep(0.5)

    monkeypatch.setattr(consumers.StreamConsumer, "market_ticker", slow_handler)

    async def body():
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "trades", "pair": "BTC-USD"}])
        await receive(ws, "subscribed")
        for n in range(10):
            await get_channel_layer().group_send("trades.BTC-USD", {
                "type": "market.ticker", "group": "trades.BTC-USD", "text": json.dumps({"type": "ticker", "n": n})})
        error = await receive(ws, "error", timeout=5)
        closed = await ws.receive_output(timeout=15)
        return error, closed

    error, closed = run(body)

    assert error["code"] == "SLOW_CONSUMER" and error["details"] == {"limit_messages": 3}
    assert closed["type"] == "websocket.close" and closed["code"] == 4008


def test_heartbeats_due_together_share_one_read_of_the_committed_sequence(monkeypatch):
    from types import SimpleNamespace

    from marketdata import hub as hubs

    reads = []

    def book_sequence(market):
        reads.append(market.pair)
        return 41

    monkeypatch.setattr(hubs.services, "book_sequence", book_sequence)
    hub, market = hubs.StreamHub(layer=None), SimpleNamespace(pair="BTC-USD")
    hub.relayed["BTC-USD"] = 40

    async def body():  # connections that subscribed together: their heartbeats come due together
        return await asyncio.gather(*(hub.latest_sequence(market) for _ in range(20)))

    assert run(body) == [41] * 20
    assert reads == ["BTC-USD"]


async def messages_until_quiet(ws, quiet=1.0) -> list[dict]:
    messages = []
    while not await ws.receive_nothing(timeout=quiet):
        messages.append(json.loads(await ws.receive_from()))
    return [message for message in messages if message["type"] != "heartbeat"]


def test_a_channel_named_twice_in_one_subscribe_is_subscribed_once(markets, traders):
    async def body():
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "orderbook", "pair": "BTC-USD"},
                                               {"name": "orderbook", "pair": "btc-usd"}])
        messages = await messages_until_quiet(ws)
        await ws.disconnect()
        return messages

    assert [message["type"] for message in run(body)] == ["subscribed", "snapshot"]


def test_no_trade_reaches_a_connection_after_its_unsubscribed(markets, traders):
    """A trade published while the unsubscribe waits for the hub (held by another connection's join over a slow
    Redis, say) is queued for the connection, which is still a member: it is dropped, not sent after the ack."""
    from marketdata.hub import hub_for

    alice, bob = traders

    async def body():
        ws = await connect()
        await op(ws, op="subscribe", channels=[{"name": "trades", "pair": "BTC-USD"}])
        await receive(ws, "subscribed")
        hub = hub_for(get_channel_layer())
        await hub.lock.acquire()
        try:
            await op(ws, op="unsubscribe", channels=[{"name": "trades", "pair": "BTC-USD"}])
            await asyncio.sleep(0.2)
            await place(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
            await place(bob, side="buy", type="market", size=D("0.2"), time_in_force="IOC")
            await asyncio.sleep(0.2)
        finally:
            hub.lock.release()
        messages = await messages_until_quiet(ws, 1.5)
        await ws.disconnect()
        return messages

    assert [message["type"] for message in run(body)] == ["unsubscribed"]


def test_events_read_while_unsubscribed_are_not_counted_as_lost_after_subscribing_again(markets, alice):
    """Events the account's other connections got meanwhile are not this one's to miss."""
    async def body():
        ws, _ = await signed_in(alice)

        async def event(number):
            await ws.send_input({"type": "account.changes", "account": alice.pk, "event": number, "orders": [],
                                 "fills": [], "group": f"account.{alice.pk}"})

        await op(ws, op="subscribe", channels=[{"name": "orders"}])
        await receive(ws, "subscribed")
        await event(4)
        await op(ws, op="unsubscribe", channels=[{"name": "orders"}])
        await receive(ws, "unsubscribed")
        await event(5)  # published before the leave took effect, read after the unsubscribe
        await op(ws, op="subscribe", channels=[{"name": "orders"}])  # 6 to 8 went to another connection
        await receive(ws, "subscribed")
        await event(9)
        messages = await messages_until_quiet(ws, 3.5)
        await ws.disconnect()
        return messages

    assert [message for message in run(body) if message["type"] == "error"] == []
