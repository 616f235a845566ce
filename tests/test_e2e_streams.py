"""Real Daphne, a real Celery matcher, PostgreSQL and Redis: bots in other processes stream orders and
cancels over signed REST while WebSocket clients rebuild the book from snapshot and deltas."""

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

import httpx
import pytest
import redis
from channels_redis.core import RedisChannelLayer
from hkt_client import BookFollower
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .processes import ROOT

pytestmark = pytest.mark.slow


def follow(follower: BookFollower, stop: threading.Event) -> None:
    while not stop.is_set():
        follower.recv_one(timeout=0.5)


def counting_snapshots(follower: BookFollower) -> list[int]:
    """The sequences of the snapshots the follower's book is given."""
    seen, apply_snapshot = [], follower.book.apply_snapshot

    def counted(message):
        seen.append(message["sequence"])
        return apply_snapshot(message)

    follower.book.apply_snapshot = counted
    return seen


def test_followers_rebuild_the_book_exactly_also_after_a_disconnect(stack):
    stack.start_matcher("BTC-USD")
    rest = stack.start_rest()
    ws_url = stack.start_daphne().replace("http://", "ws://") + "/v1/ws"
    bots = [stack.create_trader(f"bot{i}", "USD=10000000", "BTC=1000") for i in range(2)]
    steady, resuming = BookFollower(ws_url, "BTC-USD"), BookFollower(ws_url, "BTC-USD")
    snapshots = {steady: counting_snapshots(steady), resuming: counting_snapshots(resuming)}
    stops = {steady: threading.Event(), resuming: threading.Event()}
    threads = {f: threading.Thread(target=follow, args=(f, stops[f])) for f in (steady, resuming)}
    for thread in threads.values():
        thread.start()

    streams = [subprocess.Popen([sys.executable, "-m", "tests.bot_stream", rest, bot["key"], bot["secret"], "100",
                                 str(i)], cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, text=True)
               for i, bot in enumerate(bots)]
    deadline = time.monotonic() + 60
    while (steady.book.sequence or 0) < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    # Mid-flow the second client goes away while 20 deltas happen, then resumes with since_sequence.
    stops[resuming].set()
    threads[resuming].join(timeout=10)
    resuming.disconnect()
    away_at = resuming.book.sequence
    while (steady.book.sequence or 0) < away_at + 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    stops[resuming] = threading.Event()
    threads[resuming] = threading.Thread(target=follow, args=(resuming, stops[resuming]))
    threads[resuming].start()
    placed = [int(s.communicate(timeout=300)[0]) for s in streams]

    def settled():
        audit = stack.audit()
        return audit["pending_commands"] == 0 and audit

    deadline = time.monotonic() + 60
    while not settled() and time.monotonic() < deadline:
        time.sleep(1)
    book = httpx.get(f"{rest}/v1/orderbook/BTC-USD?depth=100").json()
    deadline = time.monotonic() + 30
    while (steady.book.sequence, resuming.book.sequence) != (book["sequence"],) * 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    for follower in (steady, resuming):
        stops[follower].set()
        threads[follower].join(timeout=10)

    assert sum(placed) > 100
    assert book["sequence"] > 100
    for follower in (steady, resuming):
        assert follower.book.sequence == book["sequence"]
        assert follower.book.bids(100) == book["bids"]
        assert follower.book.asks(100) == book["asks"]
        # Every delta applied in order with a matching checksum: no gap or mismatch was ever repaired.
        assert (follower.resyncs, follower.errors) == (0, [])
    assert steady.book.sequence >= away_at + 20 and resuming.reconnects == 1
    assert len(snapshots[steady]) == len(snapshots[resuming]) == 1  # the resume was replayed, not a snapshot
    assert stack.audit()["problems"] == []


def test_a_client_too_slow_to_keep_up_is_disconnected_with_a_reason(stack):
    stack.manage("shell", "-c", DEEP_BOOK)  # 800 levels a side: every snapshot is about 45 kB
    # Its subscribes are the load: an allowance that takes them all.
    ws_url = stack.start_daphne(WS_MAX_PENDING_BYTES="1000000", WS_WRITE_LOW_WATER_BYTES="65536",
                                WS_MESSAGE_BURST="1000")
    ws_url = ws_url.replace("http://", "ws://") + "/v1/ws"
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    raw.connect(("127.0.0.1", int(ws_url.split(":")[2].split("/")[0])))
    slow = connect(ws_url, sock=raw, max_size=None, max_queue=1).__enter__()  # closed by the server
    received, closed = [], {}

    def stall_then_read():  # a client that stops reading for 5 s (a long pause, a blocked thread)
        time.sleep(5)
        try:
            while True:
                received.append(json.loads(slow.recv(timeout=15)))
        except ConnectionClosed as error:
            closed["code"] = error.rcvd and error.rcvd.code

    reader = threading.Thread(target=stall_then_read)
    reader.start()
    book = [{"name": "orderbook", "pair": "BTC-USD"}]
    slow.send(json.dumps({"op": "subscribe", "channels": book}))
    for _ in range(160):  # snapshot after snapshot
        slow.send(json.dumps({"op": "unsubscribe", "channels": book}))
        slow.send(json.dumps({"op": "subscribe", "channels": book}))
    with connect(ws_url) as healthy:
        healthy.send(json.dumps({"op": "ping"}))
        pong = json.loads(healthy.recv(timeout=5))
    reader.join(timeout=60)

    assert pong == {"type": "pong"}  # the others were served meanwhile
    assert received[-1]["type"] == "error" and received[-1]["code"] == "SLOW_CONSUMER"
    assert received[-1]["message"].startswith("slow consumer")
    assert closed == {"code": 4008}  # Daphne sends no close reason: the error message before it carries it
    assert sum(m["type"] == "snapshot" for m in received) < 160


def subscribe_message(pair: str) -> str:
    return json.dumps({"op": "subscribe", "channels": [{"name": "orderbook", "pair": pair}]})


def delta_text(pair: str, sequence: int, pad: int = 0) -> str:
    return json.dumps({"type": "delta", "channel": "orderbook", "pair": pair, "sequence": sequence, "bids": [],
                       "asks": [], "checksum": 0, "pad": "x" * pad})


def publish(stack, messages: list[dict]) -> None:
    """Messages into the stack's channel layer, each to its ``group``, in order, as the matcher's publish_batch
    sends them."""
    async def send_all():
        layer = RedisChannelLayer(hosts=[{"address": stack.env["REDIS_URL"]}], capacity=500)
        for message in messages:
            await layer.group_send(message["group"], message)
        await layer.close_pools()

    asyncio.run(send_all())


def publish_deltas(stack, pair: str, texts: dict[int, str]) -> None:
    """Book deltas into the stack's channel layer."""
    publish(stack, [{"type": "book.delta", "group": f"book.{pair}", "pair": pair, "sequence": sequence, "text": text}
                    for sequence, text in texts.items()])


def next_of_type(client, type_: str) -> str:
    """The text of the client's next message of that type (skipping heartbeats and the like)."""
    while True:
        text = client.recv(timeout=30)
        if json.loads(text)["type"] == type_:
            return text


def server_frame(text: str) -> bytes:
    """RFC 6455 section 5.2: an unmasked, unfragmented text frame."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        return bytes([0x81, length]) + payload
    if length < 1 << 16:
        return bytes([0x81, 126]) + length.to_bytes(2, "big") + payload
    return bytes([0x81, 127]) + length.to_bytes(8, "big") + payload


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def raw_subscriber(port: int, pair: str, receive_buffer: int | None = None) -> socket.socket:
    """A WebSocket client that sees the server's bytes as they are: handshake, then a masked subscribe frame."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        response += recv_exactly(sock, 1)
    assert response.startswith(b"HTTP/1.1 101")
    send_masked(sock, subscribe_message(pair))
    return sock


def send_masked(sock: socket.socket, text: str) -> None:
    """A client's text frame (masked, RFC 6455 section 5.3) of under 126 bytes."""
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_frame(sock: socket.socket) -> str:
    _, second = recv_exactly(sock, 2)
    length = second & 0x7F
    if length >= 126:
        length = int.from_bytes(recv_exactly(sock, 2 if length == 126 else 8), "big")
    return recv_exactly(sock, length).decode()


def test_relayed_deltas_reach_a_reader_byte_for_byte_while_a_stalled_subscriber_is_cut_off(stack):
    ws_url = stack.start_daphne(WS_MAX_PENDING_BYTES="1000000", WS_WRITE_LOW_WATER_BYTES="65536",
                                WS_HEARTBEAT_SECONDS="600")
    port = int(ws_url.rsplit(":", 1)[1])
    reader = raw_subscriber(port, "ETH-USD")
    assert json.loads(read_frame(reader))["type"] == "subscribed"
    sequence = json.loads(read_frame(reader))["sequence"]  # the snapshot's
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    raw.connect(("127.0.0.1", port))
    texts = {sequence + i: delta_text("ETH-USD", sequence + i, pad=20_000) for i in range(1, 401)}  # 8 MB
    expected = b"".join(server_frame(text) for text in texts.values())
    read, closed = {}, {}
    with connect(ws_url.replace("http://", "ws://") + "/v1/ws", sock=raw, max_size=None, max_queue=1) as stalled:
        stalled.send(subscribe_message("ETH-USD"))
        received = [json.loads(stalled.recv(timeout=30)) for _ in range(2)]  # subscribed, snapshot; then a stall
        reading = threading.Thread(target=lambda: read.update(data=recv_exactly(reader, len(expected))))
        reading.start()

        publish_deltas(stack, "ETH-USD", texts)

        reading.join(timeout=120)
        try:
            while True:
                received.append(json.loads(stalled.recv(timeout=30)))
        except ConnectionClosed as error:
            closed["code"] = error.rcvd and error.rcvd.code
    deltas = [m["sequence"] for m in received if m["type"] == "delta"]
    assert read.get("data") == expected  # every delta, in order, the publisher's text in a plain frame
    assert deltas == list(range(sequence + 1, sequence + 1 + len(deltas))) and len(deltas) < 400
    assert received[-1]["type"] == "error" and received[-1]["code"] == "SLOW_CONSUMER"
    assert closed == {"code": 4008}


def test_every_subscriber_of_a_process_reads_the_publishers_messages_byte_for_byte_in_order(stack):
    """The hub frames each message once (several texts together) and writes the same bytes to each of its
    connections: what several real clients of one Daphne process read is exactly the server framing of
    the publisher's texts, message after message, whatever their length encoding; also when the hub
    reads many messages together (published while Daphne is stopped) and writes them in one go."""
    ws_url = stack.start_daphne(WS_HEARTBEAT_SECONDS="600")
    daphne = stack.started[-1][1]
    readers = [raw_subscriber(int(ws_url.rsplit(":", 1)[1]), "ETH-USD") for _ in range(6)]
    snapshots = set()
    for reader in readers:
        send_masked(reader, json.dumps({"op": "subscribe", "channels": [{"name": "trades", "pair": "ETH-USD"}]}))
        send_masked(reader, json.dumps({"op": "ping"}))
        replies = []
        while not replies or replies[-1]["type"] != "pong":  # subscribed (twice) and the snapshot before it
            replies.append(json.loads(read_frame(reader)))
        snapshots.update(reply["sequence"] for reply in replies if reply["type"] == "snapshot")
    (sequence,) = snapshots
    deltas = {sequence + i: delta_text("ETH-USD", sequence + i, pad=i % 200) for i in range(1, 301)}
    deltas[sequence + 301] = delta_text("ETH-USD", sequence + 301, pad=70_000)  # a 64-bit length
    trades = [[json.dumps({"type": "trade", "channel": "trades", "pair": "ETH-USD", "trade_id": 3 * i + k})
               for k in range(i % 3 + 1)] for i in range(60)]
    expected_deltas = b"".join(server_frame(text) for text in deltas.values())
    expected_trades = b"".join(server_frame(text) for texts in trades for text in texts)

    os.killpg(daphne.pid, signal.SIGSTOP)
    try:
        publish_deltas(stack, "ETH-USD", deltas)
    finally:
        os.killpg(daphne.pid, signal.SIGCONT)
    read_deltas = [recv_exactly(reader, len(expected_deltas)) for reader in readers]
    publish(stack, [{"type": "market.trades", "group": "trades.ETH-USD", "texts": texts} for texts in trades])
    read_trades = [recv_exactly(reader, len(expected_trades)) for reader in readers]
    for reader in readers:
        reader.close()

    assert read_deltas == [expected_deltas] * len(readers)
    assert read_trades == [expected_trades] * len(readers)


def test_connections_written_directly_keep_their_order_through_a_ping_a_stale_delta_and_a_stall(stack):
    """Once a connection has taken a delta at once, the hub writes it the group's next deltas with no check
    of its own (hub.Group) until it does anything else: here a client's ping, a delta that does not follow
    on, a socket the kernel stops taking. Deltas published one at a time (each read alone, so each is
    written at once): every reader reads each in order, its pong where it asked, the stale one to none;
    heartbeats after the direct writes carry the last sequence written; the subscriber that stopped
    reading reads them all, byte for byte, once it reads again, and is written at once again after."""
    ws_url = stack.start_daphne(WS_HEARTBEAT_SECONDS="3", WS_MAX_PENDING_BYTES="100000000")
    port = int(ws_url.rsplit(":", 1)[1])
    readers = [raw_subscriber(port, "ETH-USD") for _ in range(3)]
    stalled = raw_subscriber(port, "ETH-USD", receive_buffer=65536)
    sequences = set()
    for sock in [*readers, stalled]:
        assert json.loads(read_frame(sock))["type"] == "subscribed"
        sequences.add(json.loads(read_frame(sock))["sequence"])
    (sequence,) = sequences
    texts = {sequence + i: delta_text("ETH-USD", sequence + i, pad=150_000) for i in range(1, 42)}  # 6 MB
    read, pongs = [[] for _ in readers], []

    for i in range(1, 41):
        publish_deltas(stack, "ETH-USD", {sequence + i: texts[sequence + i]})
        for reader, frames in zip(readers, read):
            frames.append(read_frame(reader))
        if i % 10 == 3:
            send_masked(readers[0], json.dumps({"op": "ping"}))
            pongs.append(json.loads(read_frame(readers[0])))
    publish_deltas(stack, "ETH-USD", {sequence + 38: texts[sequence + 38], sequence + 41: texts[sequence + 41]})
    for reader, frames in zip(readers, read):
        frames.append(read_frame(reader))
    heartbeats = [json.loads(read_frame(reader)) for reader in readers]  # the stream is quiet: within 3 s
    stalled_read = [read_frame(stalled) for _ in texts]
    after = delta_text("ETH-USD", sequence + 42)
    publish_deltas(stack, "ETH-USD", {sequence + 42: after})
    after_read = [next_delta(sock) for sock in [*readers, stalled]]
    for sock in [*readers, stalled]:
        sock.close()

    assert read == [list(texts.values())] * len(readers)
    assert pongs == [{"type": "pong"}] * 4
    assert heartbeats == [{"type": "heartbeat", "sequences": {"ETH-USD": sequence + 41}, "degraded": False}] * 3
    assert stalled_read == list(texts.values())
    assert after_read == [after] * 4


def next_delta(sock: socket.socket) -> str:
    while json.loads(text := read_frame(sock))["type"] != "delta":  # heartbeats meanwhile
        pass
    return text


def test_daphne_processes_sharing_the_port_each_relay_the_stream_to_their_own_subscribers(stack):
    ws_url = stack.start_daphne(processes=2).replace("http://", "ws://") + "/v1/ws"
    with ExitStack() as opened:
        clients = [opened.enter_context(connect(ws_url, open_timeout=60)) for _ in range(24)]  # one process: 1 in 8M
        for client in clients:
            client.send(subscribe_message("ETH-BTC"))
        sequences = {json.loads(next_of_type(client, "snapshot"))["sequence"] for client in clients}
        # A process's hub joins the group once, on its own channel, when its first local client subscribes.
        relays = redis.Redis.from_url(stack.env["REDIS_URL"]).zcard("asgi:group:book.ETH-BTC")
        (sequence,) = sequences
        text = delta_text("ETH-BTC", sequence + 1)

        publish_deltas(stack, "ETH-BTC", {sequence + 1: text})

        got = [next_of_type(client, "delta") for client in clients]
    assert relays == 2
    assert got == [text] * len(clients)


DEEP_BOOK = """
from decimal import Decimal
from django.conf import settings
from accounts.services import open_account
from django.contrib.auth import get_user_model
from trading import ledger, services
from trading.models import Asset
from trading.orders import OrderRequest
settings.MATCHER_BACKEND = "trading.backends.InProcessMatchers"
account = open_account(get_user_model().objects.create_user("deep"))
for symbol, amount in (("USD", "100000000"), ("BTC", "10000")):
    ledger.adjust_balance(account_id=account.pk, asset_id=Asset.objects.get(symbol=symbol).pk,
                          amount=Decimal(amount), reference="bench", memo="deep book")
for i in range(800):
    services.place_order(account, OrderRequest("BTC-USD", "buy", "limit", price=Decimal(50000 + i), size=Decimal("0.01")))
    services.place_order(account, OrderRequest("BTC-USD", "sell", "limit", price=Decimal(60000 + i), size=Decimal("0.01")))
"""
