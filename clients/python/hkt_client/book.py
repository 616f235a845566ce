"""A local copy of one pair's order book, kept in step with the `/v1/ws` stream (SPEC section 7).

`LocalBook` applies the server's snapshot and deltas and checks each one's sequence and checksum.
`BookFollower` reads the socket and feeds a LocalBook. When a delta is missing, or a checksum
does not match, it resubscribes with `since_sequence` (the server replays what was missed, or sends
a fresh snapshot). When the connection drops it reconnects and resumes the same way.

The book keeps the exact price and size strings it received, so its checksum uses the same text
as the server's (marketdata/checksum.py). Only `BookFollower` needs the `websockets` package, and
only its default `connect`.
"""

import heapq
import json
import time
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hkt_client import signing
from hkt_client.errors import ERRORS, ApiError

CHECKSUM_DEPTH = 10


class BookError(Exception):
    """The local book can no longer follow the stream as it is."""


class SequenceGap(BookError):
    def __init__(self, expected: int | None, got: int):
        super().__init__(f"expected sequence {expected}, got {got}")
        self.expected, self.got = expected, got


class ChecksumMismatch(BookError):
    def __init__(self, sequence: int, expected: int, got: int):
        super().__init__(f"checksum after sequence {sequence}: server {expected}, local {got}")
        self.sequence, self.expected, self.got = sequence, expected, got


def _compact(amount: str) -> str:
    return amount.replace(".", "").lstrip("0")


def book_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """Unsigned CRC32 of the top 10 asks (low to high) then top 10 bids (high to low), as the server does."""
    levels = [*asks[:CHECKSUM_DEPTH], *bids[:CHECKSUM_DEPTH]]
    return zlib.crc32("".join(_compact(price) + _compact(size) for price, size in levels).encode()) & 0xFFFFFFFF


class LocalBook:
    """One pair's book: levels keyed by Decimal price, holding the [price, size] strings received."""

    def __init__(self, pair: str | None = None):
        self.pair = pair
        self.sequence: int | None = None  # None until the first snapshot
        self._bids: dict[Decimal, list[str]] = {}
        self._asks: dict[Decimal, list[str]] = {}

    def apply_snapshot(self, message: dict) -> None:
        """Replace the whole book; raises ChecksumMismatch (keeping the old book) if the snapshot's is wrong."""
        bids = {Decimal(p): [p, s] for p, s in message.get("bids", ()) if Decimal(s) != 0}
        asks = {Decimal(p): [p, s] for p, s in message.get("asks", ()) if Decimal(s) != 0}
        old = self._bids, self._asks
        self._bids, self._asks = bids, asks
        try:
            self._verify(message)
        except ChecksumMismatch:
            self._bids, self._asks = old
            raise
        self.sequence = int(message["sequence"])

    def apply_delta(self, message: dict) -> bool:
        """Apply the next delta; False when it was already applied (sequence <= ours).

        Raises SequenceGap when it is not the next one, and ChecksumMismatch when the book after it
        does not match the server's checksum; in both cases the book stays as it was.
        """
        sequence = int(message["sequence"])
        if self.sequence is None:
            raise SequenceGap(None, sequence)
        if sequence <= self.sequence:
            return False
        if sequence != self.sequence + 1:
            raise SequenceGap(self.sequence + 1, sequence)
        undo = []
        for side, levels in ((self._bids, message.get("bids", ())), (self._asks, message.get("asks", ()))):
            for price, size in levels:
                key = Decimal(price)
                undo.append((side, key, side.get(key)))
                if Decimal(size) == 0:
                    side.pop(key, None)
                else:
                    side[key] = [price, size]
        try:
            self._verify(message)
        except ChecksumMismatch:
            for side, key, level in reversed(undo):
                if level is None:
                    side.pop(key, None)
                else:
                    side[key] = level
            raise
        self.sequence = sequence
        return True

    def _verify(self, message: dict) -> None:
        expected = message.get("checksum")
        if expected is not None and self.checksum() != int(expected):
            raise ChecksumMismatch(int(message["sequence"]), int(expected), self.checksum())

    def bids(self, n: int | None = None) -> list[list[str]]:
        """[price, size] strings, highest price first; the top ``n`` if given."""
        keys = sorted(self._bids, reverse=True) if n is None else heapq.nlargest(n, self._bids)
        return [list(self._bids[key]) for key in keys]

    def asks(self, n: int | None = None) -> list[list[str]]:
        """[price, size] strings, lowest price first; the top ``n`` if given."""
        keys = sorted(self._asks) if n is None else heapq.nsmallest(n, self._asks)
        return [list(self._asks[key]) for key in keys]

    def checksum(self) -> int:
        return book_checksum(self.bids(CHECKSUM_DEPTH), self.asks(CHECKSUM_DEPTH))

    def __repr__(self) -> str:
        return f"<LocalBook {self.pair} seq={self.sequence} bids={len(self._bids)} asks={len(self._asks)}>"


def _websockets_connect(url: str):
    from websockets.sync.client import connect

    # The follower keeps its connection across calls and closes it itself, so it enters the
    # connection's context by hand (websockets 17 warns about a connect() used any other way).
    return connect(url, open_timeout=10).__enter__()


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What a dropped connection or a failed connect raises."""
    try:
        from websockets.exceptions import WebSocketException
    except ImportError:
        return (OSError, EOFError)
    return (OSError, EOFError, WebSocketException)


MAX_BAD_SNAPSHOTS = 3  # snapshots in a row whose checksum fails before BookFollower gives up


class BookFollower:
    """Follow one pair's book over `/v1/ws`, resynchronising and reconnecting as needed.

    ``on_update(book)`` is called after every snapshot or delta applied. ``connect(url)`` returns a
    connection with ``send(text)``, ``recv(timeout=None)`` and ``close()``; the default is
    ``websockets.sync.client.connect``. Counters: ``resyncs``, ``reconnects``; ``heartbeat_sequence``
    is the sequence of the last heartbeat, ``errors`` the error messages received.
    """

    def __init__(self, ws_url: str, pair: str, *, on_update: Callable[[LocalBook], Any] | None = None,
                 key: str | None = None, secret: str | None = None,
                 connect: Callable[[str], Any] = _websockets_connect, reconnect_delay: float = 1.0):
        self.ws_url, self.pair = ws_url, pair.upper()
        self.on_update, self.key, self.secret = on_update, key, secret
        self.connect, self.reconnect_delay = connect, reconnect_delay
        self.book = LocalBook(self.pair)
        self.resyncs = self.reconnects = 0
        self.heartbeat_sequence: int | None = None
        self.errors: list[dict] = []
        self._ws = None
        self._connected_before = False
        self._awaiting_ack = False  # book messages before the "subscribed" answer are stale: skip them
        self._since: int | None = None  # the since_sequence of the last subscribe sent
        self._mismatch_at: int | None = None
        self._bad_snapshots = 0  # in a row
        self._closed = False

    # -- the connection

    def _open(self) -> None:
        ws = self.connect(self.ws_url)
        self._ws = ws
        if self._connected_before:
            self.reconnects += 1
        self._connected_before = True
        if self.key and self.secret:
            headers = signing.signed_headers(self.key, self.secret, "GET", "/v1/ws")
            self._send({"op": "auth", "key": self.key, "timestamp": headers["X-Api-Timestamp"],
                        "nonce": headers["X-Api-Nonce"], "signature": headers["X-Api-Signature"]})
        self._subscribe(self.book.sequence)

    def _send(self, message: dict) -> None:
        self._ws.send(json.dumps(message))

    def _subscribe(self, since_sequence: int | None) -> None:
        channel = {"name": "orderbook", "pair": self.pair}
        if since_sequence is not None:
            channel["since_sequence"] = since_sequence
        self._send({"op": "subscribe", "channels": [channel]})
        self._awaiting_ack, self._since = True, since_sequence

    def _resync(self, since_sequence: int | None) -> None:
        self.resyncs += 1
        self._subscribe(since_sequence)

    def disconnect(self) -> None:
        """Drop the socket; the next read reconnects and resumes from the book's sequence."""
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except _connection_errors():
                pass

    def close(self) -> None:
        self._closed = True
        self.disconnect()

    def __enter__(self) -> "BookFollower":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading

    def recv_one(self, timeout: float | None = None) -> dict | None:
        """(Re)connect if needed, read and handle one message; None on a timeout or a dropped connection."""
        if self._closed:
            raise BookError("this follower is closed")
        if self._ws is None:
            self._open()
        try:
            raw = self._ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except _connection_errors():
            self.disconnect()
            return None
        message = json.loads(raw)
        self.handle(message)
        return message

    def handle(self, message: dict) -> None:
        """Act on one decoded server message."""
        kind = message.get("type")
        if kind == "subscribed" and message.get("channel") == "orderbook":
            self._awaiting_ack = False
        elif kind == "error":
            self.errors.append(message)
            code = str(message.get("code"))
            if message.get("op") in ("subscribe", "auth"):
                raise ERRORS.get(code, ApiError)(code, str(message.get("message", "")), message.get("details"))
            if code == "RATE_LIMITED" and self._awaiting_ack:
                # The server did not read a message of ours (past the connection's message allowance), maybe
                # the subscribe whose answer is awaited: sent again once allowed (a repeat is answered alike).
                time.sleep(float((message.get("details") or {}).get("retry_after", 1)))
                self._subscribe(self._since)
        elif kind == "heartbeat":
            self.heartbeat_sequence = (message.get("sequences") or {}).get(self.pair, self.heartbeat_sequence)
            behind = self.book.sequence is not None and (self.heartbeat_sequence or 0) > self.book.sequence
            if behind and not self._awaiting_ack:
                self._resync(self.book.sequence)
        elif kind in ("snapshot", "delta") and message.get("pair") == self.pair and not self._awaiting_ack:
            self._apply(message)

    def _apply(self, message: dict) -> None:
        if message["type"] == "snapshot":
            try:
                self.book.apply_snapshot(message)
            except ChecksumMismatch:
                # Damaged on the way, or a server fault: ask again, a few times, then let the caller know.
                self._bad_snapshots += 1
                if self._bad_snapshots >= MAX_BAD_SNAPSHOTS:
                    raise
                self._resync(None)
                return
            self._bad_snapshots = 0
        else:
            try:
                if not self.book.apply_delta(message):
                    return
            except SequenceGap:
                self._resync(self.book.sequence)  # None (no snapshot yet) asks for a snapshot
                return
            except ChecksumMismatch as mismatch:
                # Resume first; if the same delta fails again the local book is wrong: take a snapshot.
                again = self._mismatch_at == mismatch.sequence
                self._mismatch_at = mismatch.sequence
                self._resync(None if again else self.book.sequence)
                return
        if self.on_update is not None:
            self.on_update(self.book)

    def run(self, until: Callable[[LocalBook], bool] | None = None, timeout: float | None = None) -> bool:
        """Handle messages until ``until(book)`` is true (checked once the book has a snapshot) or
        ``timeout`` seconds pass; True if ``until`` was met. Failed reconnects are retried."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            if until is not None and self.book.sequence is not None and until(self.book):
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                self.recv_one(timeout=remaining)
            except _connection_errors():  # the (re)connect failed, or a send on a dropped socket
                self.disconnect()
                time.sleep(self.reconnect_delay if remaining is None else min(self.reconnect_delay, remaining))
        return False
