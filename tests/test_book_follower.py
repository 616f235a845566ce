"""The Python client's local order book (hkt_client.book): the SPEC section 7 checksum, snapshots and
deltas, and BookFollower's resynchronisation and reconnection driven by a fake connection that plays
canned server messages. No server here; the end-to-end tests run the real socket."""

import json
import sys
import zlib
from decimal import Decimal
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "python"
try:
    import hkt_client
except ImportError:  # not installed into this venv yet: use the source tree
    sys.path.insert(0, str(CLIENT_DIR))
    import hkt_client

from hkt_client import BookFollower, ChecksumMismatch, LocalBook, SequenceGap, book_checksum, errors, signing
from exchange.checksum import book_checksum as server_checksum

PAIR = "BTC-USD"


def crc(bids, asks) -> int:
    """The checksum written out independently: top 10 asks low->high, then top 10 bids high->low."""
    def compact(amount):
        return amount.replace(".", "").lstrip("0")

    text = "".join(compact(price) + compact(size) for price, size in [*asks[:10], *bids[:10]])
    return zlib.crc32(text.encode()) & 0xFFFFFFFF


class ServerBook:
    """The server's side: the book as it should be, and the messages it would send."""

    def __init__(self, bids, asks, sequence=10):
        self.bids = {Decimal(p): [p, s] for p, s in bids}
        self.asks = {Decimal(p): [p, s] for p, s in asks}
        self.sequence = sequence
        self.history = {}

    def levels(self):
        bids = [self.bids[k] for k in sorted(self.bids, reverse=True)]
        return bids, [self.asks[k] for k in sorted(self.asks)]

    def snapshot(self):
        bids, asks = self.levels()
        return {"type": "snapshot", "channel": "orderbook", "pair": PAIR, "sequence": self.sequence,
                "bids": bids, "asks": asks, "checksum": crc(bids, asks)}

    def delta(self, bids=(), asks=()):
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = [price, size]
        self.sequence += 1
        message = {"type": "delta", "channel": "orderbook", "pair": PAIR, "sequence": self.sequence,
                   "bids": [list(level) for level in bids], "asks": [list(level) for level in asks],
                   "checksum": crc(*self.levels())}
        self.history[self.sequence] = message
        return message


def small_server():
    return ServerBook(bids=[["100.50", "1.25"], ["100.00", "0.500"], ["99.5", "3"]],
                      asks=[["101.00", "2"], ["101.5", "0.01"], ["102", "7.5"]])


SUBSCRIBED = {"type": "subscribed", "channel": "orderbook", "pair": PAIR}


# -- the checksum


def test_checksum_of_a_known_small_book():
    bids = [["100.50", "1.25"], ["100.00", "0.500"]]
    asks = [["101.00", "2"], ["101.5", "0.01"]]
    # asks low->high: 10100|2, 1015|1 (0.01 -> 001 -> 1); bids high->low: 10050|125, 10000|500
    expected = zlib.crc32(b"10100" b"2" b"1015" b"1" b"10050" b"125" b"10000" b"500") & 0xFFFFFFFF
    assert book_checksum(bids, asks) == expected == server_checksum(bids, asks)
    book = LocalBook()
    book.apply_snapshot({"sequence": 1, "bids": bids, "asks": asks, "checksum": expected})
    assert book.checksum() == expected


def test_checksum_uses_only_the_top_ten_levels_and_the_strings_received():
    bids = [[f"{1000 - i}.{i:02d}", f"0.{i + 1:03d}"] for i in range(15)]
    asks = [[f"{2000 + i}.5", f"{i + 1}.000"] for i in range(15)]
    book = LocalBook()
    book.apply_snapshot({"sequence": 5, "bids": bids[::-1], "asks": asks[::-1]})  # any order in, best first out
    assert book.bids() == bids and book.asks() == asks
    assert book.checksum() == crc(bids, asks) == server_checksum(bids, asks)
    # "0.500" and "0.5" are the same size but not the same text: the book keeps what it received
    book.apply_delta({"sequence": 6, "bids": [[bids[0][0], "0.500"]], "asks": []})
    assert book.bids(1) == [[bids[0][0], "0.500"]]
    assert book.checksum() == crc([[bids[0][0], "0.500"], *bids[1:]], asks)


# -- LocalBook


def test_snapshot_then_deltas_give_the_expected_book():
    server = small_server()
    book = LocalBook(PAIR)
    book.apply_snapshot(server.snapshot())
    assert book.sequence == 10
    assert book.apply_delta(server.delta(bids=[["100.75", "0.3"]], asks=[["101.00", "1.5"]]))
    assert book.apply_delta(server.delta(asks=[["100.90", "4"], ["103", "1"]]))
    assert book.apply_delta(server.delta(bids=[["100.00", "0.25"]]))
    assert book.sequence == 13
    assert book.bids() == [["100.75", "0.3"], ["100.50", "1.25"], ["100.00", "0.25"], ["99.5", "3"]]
    assert book.asks() == [["100.90", "4"], ["101.00", "1.5"], ["101.5", "0.01"], ["102", "7.5"], ["103", "1"]]
    assert book.bids(2) == [["100.75", "0.3"], ["100.50", "1.25"]] and book.asks(1) == [["100.90", "4"]]
    assert (book.bids(), book.asks()) == server.levels()


def test_size_zero_removes_a_level():
    server = small_server()
    book = LocalBook(PAIR)
    book.apply_snapshot(server.snapshot())
    book.apply_delta(server.delta(bids=[["100.50", "0"]], asks=[["101.5", "0.00"]]))
    assert book.bids() == [["100.00", "0.500"], ["99.5", "3"]]
    assert book.asks() == [["101.00", "2"], ["102", "7.5"]]
    book.apply_delta(server.delta(bids=[["98", "0"]]))  # removing a level that is not there: no change
    assert (book.bids(), book.asks()) == server.levels()


def test_a_gap_raises_sequence_gap_and_leaves_the_book_alone():
    server = small_server()
    book = LocalBook(PAIR)
    book.apply_snapshot(server.snapshot())
    server.delta(bids=[["100.75", "1"]])
    skipped = server.delta(asks=[["101.00", "0"]])
    with pytest.raises(SequenceGap) as raised:
        book.apply_delta(skipped)
    assert (raised.value.expected, raised.value.got) == (11, 12)
    assert book.sequence == 10 and book.bids(1) == [["100.50", "1.25"]] and book.asks(1) == [["101.00", "2"]]
    with pytest.raises(SequenceGap):
        LocalBook().apply_delta(skipped)  # no snapshot yet


def test_a_wrong_checksum_raises_and_rolls_the_delta_back():
    server = small_server()
    book = LocalBook(PAIR)
    book.apply_snapshot(server.snapshot())
    before = book.bids(), book.asks(), book.checksum()
    delta = server.delta(bids=[["100.50", "0"], ["100.60", "2"]], asks=[["101.00", "9"]])
    with pytest.raises(ChecksumMismatch) as raised:
        book.apply_delta({**delta, "checksum": delta["checksum"] ^ 1})
    assert raised.value.sequence == 11 and raised.value.got == delta["checksum"]
    assert (book.bids(), book.asks(), book.checksum()) == before and book.sequence == 10
    assert book.apply_delta(delta)  # the right one still applies
    with pytest.raises(ChecksumMismatch):
        LocalBook().apply_snapshot({**server.snapshot(), "checksum": 12345})


def test_stale_deltas_are_ignored():
    server = small_server()
    book = LocalBook(PAIR)
    first = server.delta(bids=[["100.75", "1"]])
    book.apply_snapshot(server.snapshot())  # the snapshot already has sequence 11
    assert book.apply_delta(first) is False
    assert book.apply_delta({**first, "bids": [["100.75", "0"]], "checksum": 0}) is False  # not even checked
    assert book.sequence == 11 and book.bids(1) == [["100.75", "1"]]


# -- BookFollower with a fake connection


class FakeConnection:
    """Plays `script` (messages, or exceptions to raise) to recv(); records what was sent."""

    def __init__(self, script):
        self.script, self.sent, self.closed = list(script), [], False

    def send(self, text):
        self.sent.append(json.loads(text))

    def recv(self, timeout=None):
        if not self.script:
            raise TimeoutError
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return json.dumps(item)

    def close(self):
        self.closed = True


class FakeServer:
    """`connect` for BookFollower: each call opens the next scripted connection."""

    def __init__(self, *scripts):
        self.connections = [FakeConnection(script) for script in scripts]
        self.opened = []

    def __call__(self, url):
        connection = self.connections[len(self.opened)]
        self.opened.append((url, connection))
        return connection

    def sent(self, index=0):
        return self.connections[index].sent


def subscribe(since=None):
    channel = {"name": "orderbook", "pair": PAIR}
    if since is not None:
        channel["since_sequence"] = since
    return {"op": "subscribe", "channels": [channel]}


def drain(follower, n=100):
    for _ in range(n):
        if follower.recv_one(timeout=0) is None and not follower._ws.script:
            return


def corrupted(message):
    """``message`` with a checksum that does not match its book."""
    return {**message, "checksum": message["checksum"] ^ 0xFF}


def corrupted_delta_after_snapshot():
    """A server's book, its snapshot at 10 and, corrupted, the delta 11 it then sends."""
    server = small_server()
    snapshot = server.snapshot()
    return server, snapshot, corrupted(server.delta(bids=[["100.75", "1"]]))


def drained(*scripts):
    """A follower of PAIR that has read all of ``scripts`` (one per connection), and its fake server."""
    fake = FakeServer(*scripts)
    follower = BookFollower("ws://x/v1/ws", PAIR, connect=fake)
    drain(follower)
    return fake, follower


def assert_resumed_once_to(server, script, sequence):
    """Following ``script`` takes one resubscribe from sequence 10 and ends at ``sequence`` with the server's book."""
    fake, follower = drained(script)
    assert fake.sent() == [subscribe(), subscribe(since=10)]
    assert follower.resyncs == 1 and follower.book.sequence == sequence
    assert (follower.book.bids(), follower.book.asks()) == server.levels()


def test_follower_subscribes_and_applies_the_stream():
    server = small_server()
    updates = []
    script = [SUBSCRIBED, server.snapshot(), server.delta(bids=[["100.75", "1"]]),
              {"type": "trade", "pair": PAIR}, server.delta(asks=[["101.00", "0"]])]
    fake = FakeServer(script)
    follower = BookFollower("ws://x/v1/ws", "btc-usd", on_update=lambda book: updates.append(book.sequence),
                            connect=fake)
    assert follower.run(until=lambda book: book.sequence == 12, timeout=2) is True
    assert fake.opened[0][0] == "ws://x/v1/ws" and fake.sent() == [subscribe()]
    assert updates == [10, 11, 12]
    assert (follower.book.bids(), follower.book.asks()) == server.levels()
    assert (follower.resyncs, follower.reconnects) == (0, 0)
    follower.close()
    assert fake.connections[0].closed


def test_a_gap_resumes_from_the_last_good_sequence():
    server = small_server()
    snapshot = server.snapshot()
    d11 = server.delta(bids=[["100.75", "1"]])
    d12 = server.delta(asks=[["101.00", "3"]])
    d13 = server.delta(bids=[["100.50", "0"]])
    # 11 is lost; 12 shows the gap; 13 was already on its way before the resubscribe, then the replay
    script = [SUBSCRIBED, snapshot, d12, d13, SUBSCRIBED, d11, d12, d13]
    assert_resumed_once_to(server, script, 13)


def test_a_checksum_mismatch_resumes_and_takes_a_snapshot_if_the_server_sends_one():
    server, snapshot, bad = corrupted_delta_after_snapshot()
    d12 = server.delta(asks=[["101.5", "0"]])
    script = [SUBSCRIBED, snapshot, bad, SUBSCRIBED, server.snapshot(), d12]  # the server answers with a snapshot
    assert_resumed_once_to(server, script, 12)


def test_the_same_delta_failing_twice_asks_for_a_fresh_snapshot():
    server, snapshot, bad = corrupted_delta_after_snapshot()
    fake, follower = drained([SUBSCRIBED, snapshot, bad, SUBSCRIBED, bad, SUBSCRIBED, server.snapshot()])
    assert fake.sent() == [subscribe(), subscribe(since=10), subscribe()]
    assert follower.resyncs == 2 and follower.book.sequence == 11


def test_a_damaged_snapshot_is_asked_for_again_and_repeated_damage_is_raised():
    server = small_server()
    snapshot = server.snapshot()
    damaged = corrupted(snapshot)
    fake, follower = drained([SUBSCRIBED, damaged, SUBSCRIBED, snapshot])
    assert fake.sent() == [subscribe(), subscribe()]
    assert follower.resyncs == 1 and follower.book.sequence == 10

    fake = FakeServer([SUBSCRIBED, damaged, SUBSCRIBED, damaged, SUBSCRIBED, damaged])
    follower = BookFollower("ws://x/v1/ws", PAIR, connect=fake)
    with pytest.raises(ChecksumMismatch):
        follower.run(timeout=2)
    assert follower.book.sequence is None and follower.resyncs == 2


def test_a_heartbeat_ahead_of_the_book_means_missed_deltas():
    server = small_server()
    snapshot = server.snapshot()
    d11 = server.delta(bids=[["100.75", "1"]])
    script = [SUBSCRIBED, snapshot, {"type": "heartbeat", "sequences": {PAIR: 10, "ETH-USD": 99}},
              {"type": "heartbeat", "sequences": {PAIR: 11}}, SUBSCRIBED, d11,
              {"type": "heartbeat", "sequences": {PAIR: 11}}]
    fake, follower = drained(script)
    assert fake.sent() == [subscribe(), subscribe(since=10)]
    assert follower.resyncs == 1 and follower.heartbeat_sequence == 11 and follower.book.sequence == 11


def test_a_dropped_connection_reconnects_and_resumes():
    from websockets.exceptions import ConnectionClosed

    server = small_server()
    snapshot = server.snapshot()
    d11, d12, d13 = (server.delta(bids=[[f"100.{n}", "1"]]) for n in (7, 8, 9))
    fake = FakeServer([SUBSCRIBED, snapshot, d11, ConnectionClosed(None, None)],
                      [SUBSCRIBED, d12],
                      [SUBSCRIBED, d13])
    follower = BookFollower("ws://x/v1/ws", PAIR, connect=fake)
    assert follower.run(until=lambda book: book.sequence == 12, timeout=2)
    assert [c.sent for c in fake.connections[:2]] == [[subscribe()], [subscribe(since=11)]]
    follower.disconnect()  # deliberately, as a test of resume would
    assert fake.connections[1].closed
    assert follower.run(until=lambda book: book.sequence == 13, timeout=2)
    assert fake.sent(2) == [subscribe(since=12)] and follower.reconnects == 2 and follower.resyncs == 0
    assert (follower.book.bids(), follower.book.asks()) == server.levels()


def test_a_failed_reconnect_is_retried(monkeypatch):
    server = small_server()
    fake = FakeServer([SUBSCRIBED, server.snapshot(), ConnectionResetError()], [SUBSCRIBED])
    attempts = []

    def flaky(url):
        attempts.append(url)
        if len(attempts) == 2:
            raise ConnectionRefusedError
        return fake(url)

    follower = BookFollower("ws://x/v1/ws", PAIR, connect=flaky, reconnect_delay=0)
    assert follower.run(until=lambda book: follower.reconnects == 1 and fake.sent(1), timeout=2)
    assert len(attempts) == 3 and fake.sent(1) == [subscribe(since=10)]


def test_run_returns_false_on_timeout():
    fake = FakeServer([SUBSCRIBED])
    follower = BookFollower("ws://x/v1/ws", PAIR, connect=fake)
    assert follower.run(until=lambda book: True, timeout=0.05) is False  # never had a snapshot
    assert follower.book.sequence is None


def test_auth_is_signed_like_rest_and_a_refused_subscribe_raises():
    fake = FakeServer([{"type": "error", "op": "subscribe", "code": "UNKNOWN_PAIR", "message": "No such pair.",
                        "details": {"pair": "NOPE-USD"}}])
    follower = BookFollower("ws://x/v1/ws", "NOPE-USD", key="hkt_test_k", secret="s3cret", connect=fake)
    with pytest.raises(errors.ApiError) as raised:
        follower.recv_one()
    assert raised.value.code == "UNKNOWN_PAIR" and type(raised.value).__name__ == "UnknownPair"
    auth, sub = fake.sent()
    assert auth["op"] == "auth" and auth["key"] == "hkt_test_k" and sub["op"] == "subscribe"
    assert auth["signature"] == signing.sign("s3cret", signing.prehash(auth["timestamp"], auth["nonce"], "GET",
                                                                         "/v1/ws", b""))


def test_a_resubscribe_the_server_did_not_read_is_sent_again_once_allowed():
    """Past the connection's message allowance the server reads nothing and answers RATE_LIMITED with no
    op: the follower would wait for ever for the answer to a subscribe that was never read."""
    server = small_server()
    snapshot = server.snapshot()
    lost = server.delta(bids=[["100.75", "1"]])  # never received: a gap
    after_gap = server.delta(asks=[["101.00", "3"]])
    not_read = {"type": "error", "op": None, "code": "RATE_LIMITED", "message": "not read",
                "details": {"retry_after": 0.01}}
    fake = FakeServer([SUBSCRIBED, snapshot, after_gap, not_read, SUBSCRIBED, lost, after_gap])
    follower = BookFollower("ws://x/v1/ws", PAIR, connect=fake)

    drain(follower)

    assert fake.sent() == [subscribe(), subscribe(since=10), subscribe(since=10)]
    bids, asks = server.levels()
    assert follower.book.sequence == 12 and (follower.book.bids(10), follower.book.asks(10)) == (bids, asks)
