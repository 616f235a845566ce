"""Real Daphne, a real Celery matcher, PostgreSQL and Redis: bots in other processes stream orders and
cancels over signed REST while WebSocket clients rebuild the book from snapshot and deltas."""

import subprocess
import sys
import threading
import time

import httpx
import pytest
from hkt_client import BookFollower

from .processes import ROOT
from .stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("streams")) as stack:
        yield stack


def follow(follower: BookFollower, stop: threading.Event) -> None:
    while not stop.is_set():
        follower.recv_one(timeout=0.5)


def test_followers_rebuild_the_book_exactly_also_after_a_disconnect(stack):
    stack.start_matcher("BTC-USD")
    rest = stack.start_rest()
    ws_url = stack.start_daphne().replace("http://", "ws://") + "/v1/ws"
    bots = [stack.create_trader(f"bot{i}", "USD=10000000", "BTC=1000") for i in range(2)]
    steady, resuming = BookFollower(ws_url, "BTC-USD"), BookFollower(ws_url, "BTC-USD")
    stop = threading.Event()
    threads = [threading.Thread(target=follow, args=(f, stop)) for f in (steady, resuming)]
    for thread in threads:
        thread.start()

    streams = [subprocess.Popen([sys.executable, "-m", "tests.bot_stream", rest, bot["key"], bot["secret"], "8", str(i)],
                                cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, text=True)
               for i, bot in enumerate(bots)]
    time.sleep(3)
    resuming.disconnect()  # it misses what happens while it is away, then resumes with since_sequence
    time.sleep(2)
    placed = [int(s.communicate(timeout=60)[0]) for s in streams]

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
    stop.set()
    for thread in threads:
        thread.join(timeout=10)

    assert sum(placed) > 100
    assert book["sequence"] > 100
    for follower in (steady, resuming):
        assert follower.book.sequence == book["sequence"]
        assert follower.book.bids(100) == book["bids"]
        assert follower.book.asks(100) == book["asks"]
    assert resuming.reconnects >= 1
    assert stack.audit()["problems"] == []


def test_a_client_too_slow_to_keep_up_is_disconnected_with_a_reason(stack):
    import json
    import socket

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    stack.manage("shell", "-c", DEEP_BOOK)  # 800 levels a side: every snapshot is about 45 kB
    ws_url = stack.start_daphne(WS_MAX_PENDING_BYTES="1000000", WS_WRITE_LOW_WATER_BYTES="65536")
    ws_url = ws_url.replace("http://", "ws://") + "/v1/ws"
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    raw.connect(("127.0.0.1", int(ws_url.split(":")[2].split("/")[0])))
    slow = connect(ws_url, sock=raw, max_size=None, max_queue=1)
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


DEEP_BOOK = """
from decimal import Decimal
from django.conf import settings
from accounts.services import open_account
from django.contrib.auth import get_user_model
from trading import ledger, services
from trading.models import Asset
from trading.orders import OrderRequest
settings.MATCHER_MODE = "inprocess"
account = open_account(get_user_model().objects.create_user("deep"))
for symbol, amount in (("USD", "100000000"), ("BTC", "10000")):
    ledger.adjust_balance(account_id=account.pk, asset_id=Asset.objects.get(symbol=symbol).pk,
                          amount=Decimal(amount), reference="bench", memo="deep book")
for i in range(800):
    services.place_order(account, OrderRequest("BTC-USD", "buy", "limit", price=Decimal(50000 + i), size=Decimal("0.01")))
    services.place_order(account, OrderRequest("BTC-USD", "sell", "limit", price=Decimal(60000 + i), size=Decimal("0.01")))
"""
