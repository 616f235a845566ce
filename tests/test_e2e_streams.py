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
