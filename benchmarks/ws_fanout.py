"""WebSocket fan-out: latency from a matcher commit to 1,000 order-book subscribers on the real stack.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):

    .venv/bin/python benchmarks/ws_fanout.py                  # about 2.5 minutes
    .venv/bin/python benchmarks/ws_fanout.py --monitor        # + where the time goes (Redis MONITOR)
    .venv/bin/python benchmarks/ws_fanout.py --subscribers 500 --rate 50 --capacity-rates ""

What it does, in one run (loopback only, everything on this machine):

1. The stack of the end-to-end tests (tests/stack.py): a fresh PostgreSQL database ``bench_ws_<hex>``
   (migrate, demo markets, funded bot accounts), Redis database $BENCH_WS_REDIS_DB (default 11; flushed
   before and after), and the production topology of bin/run-production: gunicorn for REST (4 workers
   = 2 x cores, 16 threads each), --ws-procs Daphne processes (default: one per core) on one port
   through bin/start-websocket for /v1/ws, one Celery matcher for BTC-USD.
2. Bot processes stream signed REST orders (limits around 63,000 USD, ~30 % cancels, like
   tests/bot_stream.py), paced at --rate orders/s in total, closed loop (a thread waits for its answer).
3. Commit time of each book delta: the delta carries no timestamp, so a poller process reads
   ``trading_bookstate.sequence`` for BTC-USD every --poll-ms over its own connection and records when
   each sequence first became visible. The matcher writes that row in the batch's transaction, so the
   time the first poll that sees a sequence was *sent* is at most one poll gap after the commit: the
   latencies are lower bounds, short by at most the poll gap (reported).
4. Windows, each with subscriber processes that subscribe to the BTC-USD orderbook channel
   (``websockets.asyncio.client.connect``) and stamp every message with time.time_ns() on arrival
   (one clock for every process):
   - baseline: ONE process with --baseline connections (default 10) under the order flow;
   - fan-out: --procs processes x (--subscribers / --procs) connections (default 4 x 250) under the
     same flow (the bots are paused with SIGSTOP while the 1,000 connect, then resumed);
   - capacity (flow stopped, --capacity-rates): 1,000 fresh connections and synthetic deltas sent by
     this benchmark with channels_redis group_send at fixed rates, as the matcher's publish_batch
     does: what Daphne alone delivers when REST and the matcher leave it the CPU. Latency there is
     from the start of the group_send.
5. Latency = arrival - commit over every (subscriber, delta) pair whose commit fell in the window; a
   pair never delivered within --grace seconds after the window counts as slower than all the rest
   (percentiles then say "not delivered"). Also: deltas/s, messages/s delivered, sequence jumps,
   resyncs, disconnects, the Redis backlog waiting for Daphne, deltas the channel layer dropped,
   CPU by process group.

Prints figures (Markdown); asserts nothing. All processes are stopped, the database is dropped
WITH (FORCE) and the Redis db is flushed at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from array import array
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, bench_stack, machine_cpu, percentile, proc_cpu, table  # noqa: E402
from tests.processes import stop  # noqa: E402
from tests.stack import REDIS  # noqa: E402

SCRIPT = Path(__file__).resolve()
# Not the other benchmarks' or the end-to-end tests' Redis db, so that runs can overlap.
REDIS_DB = int(os.environ.get("BENCH_WS_REDIS_DB", "11"))
REDIS_URL = f"{REDIS}/{REDIS_DB}"
PAIR = "BTC-USD"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="main", choices=["main", "subscriber", "bot", "poller", "injector",
                                                           "monitor"], help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, default=1000, help="connections in the fan-out window")
    parser.add_argument("--procs", type=int, default=4, help="client processes for the fan-out window")
    parser.add_argument("--baseline", type=int, default=10, help="connections in the baseline window (1 process)")
    parser.add_argument("--rate", type=float, default=100.0, help="orders + cancels per second, all bots together")
    parser.add_argument("--bots", type=int, default=2, help="bot processes")
    parser.add_argument("--keys-per-bot", type=int, default=4, help="API keys per bot process (20 requests/s each)")
    parser.add_argument("--threads-per-key", type=int, default=4,
                        help="bot threads sharing one key (a create waits for the matcher's commit)")
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="fan-out measurement window")
    parser.add_argument("--capacity-rates", default="2,4,8",
                        help="synthetic deltas/s to the fan-out subscribers with the flow stopped ('' to skip)")
    parser.add_argument("--capacity-seconds", type=float, default=6.0, help="seconds per capacity rate")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="commit poller interval")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds after a window during which its deltas may still arrive")
    parser.add_argument("--monitor", action="store_true",
                        help="also follow Redis MONITOR to split the latency at the matcher's XADD and group_send "
                             "(costs CPU in Redis and in this benchmark)")
    parser.add_argument("--ws-procs", type=int, default=os.cpu_count(),
                        help="Daphne processes for /v1/ws, started by bin/start-websocket as in production")
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--gunicorn-threads", type=int, default=16,
                        help="gthread threads per worker: a create holds its thread until the matcher commits")
    parser.add_argument("--connect-concurrency", type=int, default=10, help="handshakes in flight per process")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, raw data)")
    parser.add_argument("--gc", default="freeze", choices=["freeze", "default"],
                        help="subscribers: gc.freeze() once connected (default), or the collector as it comes")
    parser.add_argument("--tick-ms", type=float, default=0.0,
                        help="subscribers: read their sockets every TICK ms instead of being woken by each frame "
                             "(default 0: woken by each)")
    # worker roles
    parser.add_argument("--url")
    parser.add_argument("--out")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--keys")
    parser.add_argument("--per-thread-rate", type=float)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dsn")
    parser.add_argument("--start-seq", type=int)
    parser.add_argument("--daphne-group", type=int)
    parser.add_argument("--rates")
    parser.add_argument("--step-seconds", type=float)
    return parser.parse_args(argv)


def stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


# ----------------------------------------------------------------------------------------------------
# Role: subscriber (N WebSocket connections in one asyncio process)
#
# The clients share the server's two cores, so they read as cheaply as they can: an asyncio Protocol
# that does the RFC 6455 handshake and parses the server's (unmasked) frames straight from the bytes,
# about 10x less client CPU per message than websockets' client (measured: ~140 us a message, which
# under load starved the server it measured).

DELTA_PREFIX = b'{"type": "delta"'
SEQ_KEY = b'"sequence": '
HANDSHAKE_END = b"\r\n\r\n"


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (the mask may be zero: the server only has to unmask it)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class Conn(asyncio.Protocol):
    __slots__ = ("arrivals", "buffer", "closed", "dups", "initial", "jumps", "last", "missing", "others", "ready",
                 "resyncs", "seqs", "transport", "upgraded")

    def __init__(self, ready: asyncio.Future):
        self.seqs, self.arrivals = array("q"), array("q")
        self.last = None
        self.jumps = self.missing = self.dups = self.resyncs = 0
        self.others: list[tuple[str, int]] = []
        self.closed = None
        self.initial = None
        self.ready, self.buffer, self.upgraded = ready, bytearray(), False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(HANDSHAKE_END)
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                return self.fail(bytes(buffer[:end]).decode(errors="replace"))
            del buffer[:end + 4]
            self.upgraded = True
            self.transport.write(client_frame(1, json.dumps(
                {"op": "subscribe", "channels": [{"name": "orderbook", "pair": PAIR}]}).encode()))
        start = 0
        while len(buffer) - start >= 2:
            opcode, length, header = buffer[start] & 0x0F, buffer[start + 1] & 0x7F, 2
            if length == 126:
                length, header = int.from_bytes(buffer[start + 2:start + 4], "big"), 4
            elif length == 127:
                length, header = int.from_bytes(buffer[start + 2:start + 10], "big"), 10
            if len(buffer) - start < header + length:
                break
            payload = bytes(buffer[start + header:start + header + length])
            start += header + length
            if opcode == 1:
                self.on_message(payload, now)
            elif opcode == 9:  # Daphne's keep-alive ping
                self.transport.write(client_frame(10, payload))
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.closed = (code, payload[2:].decode(errors="replace"), now)
        del buffer[:start]

    def on_message(self, message: bytes, now: int) -> None:
        if message.startswith(DELTA_PREFIX):  # fast path: json.dumps with default separators
            i = message.find(SEQ_KEY) + len(SEQ_KEY)
            seq, decoded = int(message[i:message.find(b",", i)]), None
        else:
            decoded = json.loads(message)
            seq = decoded.get("sequence") if decoded.get("type") == "delta" else None
        if self.initial is None:  # "subscribed", then the snapshot
            if decoded is not None and decoded.get("type") == "snapshot":
                self.initial = self.last = decoded["sequence"]
                if not self.ready.done():  # not timed out
                    self.ready.set_result(None)
            return
        if seq is not None:
            last = self.last
            if seq == last + 1:
                pass
            elif seq <= last:
                self.dups += 1
            else:
                self.jumps += 1
                self.missing += seq - last - 1
            self.last = seq
            self.seqs.append(seq)
            self.arrivals.append(now)
            return
        kind = decoded.get("type", "?")
        if kind == "snapshot":
            self.resyncs += 1
            self.last = decoded["sequence"]
        elif kind == "error":
            kind = f"error:{decoded.get('code')}"
        self.others.append((kind, now))

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if self.closed is None:
            self.closed = ("ended", str(exc or ""), time.time_ns())
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the snapshot: {self.closed}"))


def write_whole(path: str, data: str | bytes) -> None:
    """Write then rename, so the parent, which waits for the file to exist, never reads half of it."""
    Path(path + ".part").write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(path + ".part", path)


def gc_timeline(freeze: bool) -> list[list[int]]:
    """[start (time.time_ns), duration (ns)] of each full collection from now on, filled in as they happen."""
    if freeze:
        gc.collect()
        gc.freeze()
    timeline, started = [], [0, 0]

    def record(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[:] = time.time_ns(), time.perf_counter_ns()
        else:
            timeline.append([started[0], time.perf_counter_ns() - started[1]])

    gc.callbacks.append(record)
    return timeline


class TickSelector(selectors.DefaultSelector):
    """Polls, and sleeps a tick when nothing is ready, instead of waiting in epoll: on loopback a process
    waiting in epoll is woken by every frame the server writes, in the server's send() (its CPU) and
    preempting it, which a client on another machine would not cost the server. Arrivals are then
    stamped up to a tick late (latencies overstated, not understated)."""

    def __init__(self, tick: float):
        super().__init__()
        self.tick = tick

    def select(self, timeout=None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        time.sleep(self.tick if timeout is None else min(self.tick, timeout))
        return super().select(0)


def subscriber_loop(args) -> asyncio.AbstractEventLoop:
    if args.tick_ms <= 0:
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(TickSelector(args.tick_ms / 1000))


async def subscriber_main(args) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    host, port = args.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    request = (f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    gate = asyncio.Semaphore(args.connect_concurrency)
    connect_errors: list[str] = []
    t_start = time.time_ns()

    async def open_one() -> Conn | None:
        async with gate:
            ready = loop.create_future()
            try:
                _, conn = await loop.create_connection(lambda: Conn(ready), host, int(port))
                conn.transport.write(request)
                await asyncio.wait_for(ready, 60)
                return conn
            except Exception as error:  # noqa: BLE001 - counted and reported
                connect_errors.append(f"{type(error).__name__}: {error}")
                return None

    opening = asyncio.gather(*(open_one() for _ in range(args.connections)))
    await asyncio.wait([opening, asyncio.ensure_future(stop.wait())], timeout=75, return_when=asyncio.FIRST_COMPLETED)
    conns = [c for c in (opening.result() if opening.done() else []) if c is not None]
    subscribed = len(conns)
    # A full collection walked the 250 connections' objects (80-190 ms, stamping every arrival meanwhile
    # late): what exists once connected is kept out of the collector's walks, and each full collection
    # left is recorded, to be set beside the latencies.
    full_collections = gc_timeline(args.gc == "freeze")
    t_ready = time.time_ns()
    write_whole(args.out + ".ready", json.dumps({"subscribed": subscribed, "seconds": (t_ready - t_start) / 1e9,
                                                     "errors": connect_errors[:5]}))
    await stop.wait()
    seqs, arrivals = array("q"), array("q")
    for conn in conns:
        conn.transport.abort()
        seqs.extend(conn.seqs)
        arrivals.extend(conn.arrivals)
    write_whole(args.out + ".bin", seqs.tobytes() + arrivals.tobytes())
    summary = {
        "connections": args.connections, "subscribed": subscribed, "samples": len(seqs),
        "connect_seconds": (t_ready - t_start) / 1e9, "connect_errors": connect_errors[:10],
        "jumps": sum(c.jumps for c in conns), "missing_in_jumps": sum(c.missing for c in conns),
        "dups": sum(c.dups for c in conns), "resync_snapshots": sum(c.resyncs for c in conns),
        "others": [o for c in conns for o in c.others],
        "closed": [c.closed for c in conns if c.closed is not None],  # before the stop: abort() reports later
        "full_collections": full_collections,
    }
    write_whole(args.out + ".json", json.dumps(summary))


# ----------------------------------------------------------------------------------------------------
# Role: bot (threads, one API key each, paced signed REST orders and cancels)

def bot_main(args) -> None:
    sys.path.insert(0, str(ROOT / "clients" / "python"))
    from decimal import Decimal

    from hkt_client import Client
    from hkt_client.errors import ApiError

    stop = stop_on_sigterm()
    keys = json.loads(Path(args.keys).read_text())
    lock = threading.Lock()
    records: list[tuple[int, float, str]] = []  # (done ns, seconds, what)
    errors: dict[str, int] = {}

    def run(index: int, key: dict) -> None:
        rng = random.Random(args.seed * 1000 + index)
        client = Client(args.url, key["key"], key["secret"], timeout=10, max_retries=0)
        live: list[int] = []
        interval = 1.0 / args.per_thread_rate
        next_at = time.monotonic() + rng.random() * interval
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                if stop.wait(delay):
                    break
            elif delay < -1.0:
                next_at = time.monotonic()  # more than a second behind: do not burst to catch up
            next_at += interval
            started = time.perf_counter()
            try:
                if live and rng.random() < 0.3:
                    what = "cancel"
                    try:
                        client.cancel_order(live.pop(rng.randrange(len(live))))
                    except ApiError as error:  # already filled or cancelled
                        what = f"cancel:{type(error).__name__}"
                else:
                    side = rng.choice(["buy", "sell"])
                    price = Decimal(63000) + Decimal(rng.randint(-40, 40)) * Decimal("0.5")
                    size = Decimal(rng.randint(1, 30)) / 1000
                    order = client.place_order(PAIR, side, "limit", price=str(price), size=str(size))
                    what = f"create:{order['status']}"
                    if order["status"] in ("open", "partially_filled", "pending"):
                        live.append(order["order_id"])
            except Exception as error:  # noqa: BLE001 - counted and reported
                with lock:
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                continue
            with lock:
                records.append((time.time_ns(), time.perf_counter() - started, what))
        client.close()

    threads = [threading.Thread(target=run, args=(i * args.threads_per_key + j, key))
               for i, key in enumerate(keys) for j in range(args.threads_per_key)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    Path(args.out).write_text(json.dumps({"records": records, "errors": errors}))


# ----------------------------------------------------------------------------------------------------
# Role: poller (when each book sequence first became visible in PostgreSQL)

def poller_main(args) -> None:
    import psycopg

    stop = stop_on_sigterm()
    seen: list[tuple[int, int, int]] = []  # (sequence, this poll sent ns, previous poll sent ns)
    gaps = array("q")
    interval = args.poll_ms / 1000
    query = ("SELECT b.sequence FROM trading_bookstate b JOIN trading_market m ON m.id = b.market_id "
             "WHERE m.pair = %s")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        cur = conn.cursor()
        last, previous = None, time.time_ns()
        while not stop.is_set():
            sent = time.time_ns()
            cur.execute(query, (PAIR,), prepare=True)
            row = cur.fetchone()
            sequence = row[0] if row else 0
            if last is None:
                last = sequence  # what was committed before we started: no time known
            elif sequence > last:
                for s in range(last + 1, sequence + 1):
                    seen.append((s, sent, previous))
                last = sequence
            gaps.append(sent - previous)
            previous = sent
            time.sleep(interval)
    Path(args.out).write_text(json.dumps({"seen": seen}))
    with open(args.out + ".gaps", "wb") as f:
        gaps.tofile(f)


# ----------------------------------------------------------------------------------------------------
# Role: injector (synthetic book deltas through the channel layer, as publish_batch sends them)

def injector_main(args) -> None:
    import django

    django.setup()
    import redis
    from channels.layers import get_channel_layer

    from marketdata import replay, streams

    entries = redis.Redis.from_url(REDIS_URL).xrevrange(replay.stream_key(PAIR), count=1)
    # A real delta's client text (what the publisher encodes once), re-stamped with each new sequence.
    client_delta = json.loads(json.loads(entries[0][1][b"m"])["text"]) if entries else {
        "type": "delta", "channel": "orderbook", "pair": PAIR, "bids": [["63000.00", "0.01"]], "asks": [],
        "checksum": 0}

    def synthetic_delta(sequence: int) -> dict:
        return {"type": "book.delta", "group": group, "pair": PAIR, "sequence": sequence,
                "text": json.dumps({**client_delta, "sequence": sequence})}

    rates = [float(r) for r in args.rates.split(",")]
    group = streams.book_group(PAIR)

    def daphne_cpu() -> tuple[float, float]:  # every Daphne process (the launcher's session): all, in the kernel
        daphne = [process for process in proc_cpu().values() if process.group == args.daphne_group]
        return sum(process.cpu for process in daphne), sum(process.system for process in daphne)

    async def run() -> dict:
        layer = get_channel_layer()
        sequence, steps, sent = args.start_seq, [], []
        for rate in rates:
            t0, cpu0, start_ns, k = time.monotonic(), daphne_cpu(), time.time_ns(), 0
            while time.monotonic() - t0 < args.step_seconds:
                sequence += 1
                sent.append((sequence, time.time_ns()))
                await layer.group_send(group, synthetic_delta(sequence))
                k += 1
                await asyncio.sleep(max(0.0, t0 + k / rate - time.monotonic()))
            wall, cpu1 = time.monotonic() - t0, daphne_cpu()
            steps.append({"rate": rate, "w0": start_ns, "w1": time.time_ns(), "sent": k,
                          "daphne_cores": (cpu1[0] - cpu0[0]) / wall, "daphne_system_cores": (cpu1[1] - cpu0[1]) / wall})
            await asyncio.sleep(1.0)
        return {"steps": steps, "sent": sent}

    Path(args.out).write_text(json.dumps(asyncio.run(run())))


# ----------------------------------------------------------------------------------------------------
# Role: monitor (Redis MONITOR: when the matcher recorded each delta, and when it reached Daphne's key)

def monitor_main(args) -> None:
    import redis

    stop = stop_on_sigterm()
    xadds: list[tuple[int, int]] = []  # (sequence, Redis time ns) of XADD book-deltas:PAIR
    evals: list[int] = []  # Redis time ns of group_send's EVAL into a server process's channel key
    key = f"book-deltas:{PAIR}"

    def follow() -> None:
        with redis.Redis.from_url(REDIS_URL).monitor() as monitor:
            for command in monitor.listen():
                if command.get("db") != REDIS_DB:
                    continue
                text = command["command"]
                if text.startswith("XADD") and key in text:
                    parts = text.split(" ")
                    try:
                        ident = next(p for p in parts[2:] if p.endswith("-0") and p[:-2].isdigit())
                    except StopIteration:
                        continue
                    xadds.append((int(ident[:-2]), int(command["time"] * 1e9)))
                elif text.startswith("EVAL") and "over_capacity" in text:
                    evals.append(int(command["time"] * 1e9))

    threading.Thread(target=follow, daemon=True).start()
    stop.wait()
    Path(args.out).write_text(json.dumps({"xadds": xadds, "evals": evals}))


# ----------------------------------------------------------------------------------------------------
# Main: the stack, the phases, the figures

class CpuWindow:
    """Average cores busy per session (ProcessCpu.group) between start() and stop()."""

    def __init__(self, groups: dict[int, str]):
        self.groups = groups  # session id -> label

    def start(self):
        self.before, self.machine_before, self.t0 = proc_cpu(), machine_cpu(), time.monotonic()

    def stop(self) -> dict[str, float]:
        after, machine_after = proc_cpu(), machine_cpu()
        wall = time.monotonic() - self.t0
        used: dict[str, float] = {}
        for pid, (comm, _, cpu, _, pgrp, _) in after.items():
            before = self.before.get(pid)
            delta = cpu - (before.cpu if before is not None else 0.0)
            if delta <= 0:
                continue
            if pgrp in self.groups:
                label = self.groups[pgrp]
            elif comm.startswith(("postgres", "postmaster")):
                label = "PostgreSQL (all backends, shared)"
            elif comm.startswith("redis"):
                label = "Redis (shared)"
            else:
                label = "everything else on the machine"
            used[label] = used.get(label, 0.0) + delta / wall
        total, idle = (machine_after[0] - self.machine_before[0]), (machine_after[1] - self.machine_before[1])
        used["(machine, all cores)"] = (total - idle) / wall
        return used


class Bench:
    def __init__(self, args):
        self.args = args
        # PYTHONPATH: the roles this script runs beside the stack import the project (the injector, Django)
        self.stack = bench_stack("bench_ws", REDIS_URL, PYTHONPATH=str(ROOT))
        self.tmp = self.stack.tmp
        self.exits = ExitStack()
        self.groups: dict[int, str] = {}  # session id -> label, for CPU by process group
        self.backlog: list[tuple[int, int]] = []
        self.bots: list[subprocess.Popen] = []

    # -- processes

    def role(self, label: str, role: str, name: str, *extra: str) -> subprocess.Popen:
        """This script in another role, beside the stack; logs to ``<name>.log``."""
        process = self.stack.start(name, [sys.executable, str(SCRIPT), "--role", role, *extra])
        self.groups[process.pid] = label
        return process

    def cleanup(self, ok: bool) -> None:
        self.exits.close()  # every process stopped, the database dropped
        try:
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()
        except Exception as error:  # noqa: BLE001
            print(f"warning: could not flush Redis db {REDIS_DB}: {error}", file=sys.stderr)
        if ok and not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"logs and raw data kept in {self.tmp}", file=sys.stderr)

    def wait_files(self, paths: list[Path], processes: list[subprocess.Popen], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(p.exists() for p in paths):
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args} exited early")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout}s: {[str(p) for p in paths if not p.exists()]}")
            time.sleep(0.1)

    def book_sequence(self) -> int:
        import psycopg

        with psycopg.connect(self.stack.env["DATABASE_URL"]) as conn:
            row = conn.execute("SELECT b.sequence FROM trading_bookstate b JOIN trading_market m "
                               "ON m.id = b.market_id WHERE m.pair = %s", (PAIR,)).fetchone()
        return row[0] if row else 0

    # -- the stack

    def setup(self) -> None:
        t = time.monotonic()
        self.exits.enter_context(self.stack)  # its database migrated, with the demo markets; its Redis db flushed
        count = self.args.bots * self.args.keys_per_bot
        self.keys = self.stack.create_traders([f"wsbot{i}" for i in range(count)], "USD=10000000", "BTC=1000")
        print(f"database {self.stack.database} ready in {time.monotonic() - t:.1f}s ({count} bot keys)", flush=True)

    def start_stack(self) -> None:
        self.rest = self.stack.start_rest(self.args.gunicorn_workers, "--threads", str(self.args.gunicorn_threads))
        self.ws = self.stack.start_daphne(self.args.ws_procs).replace("http://", "ws://") + "/v1/ws"
        self.stack.start_matcher(PAIR)
        labels = {"gunicorn": "gunicorn (REST)", "daphne": "Daphne (WebSocket)", "matcher": f"Celery matcher {PAIR}"}
        for name, process in self.stack.started:
            self.groups[process.pid] = labels[name.split("-")[0]]
        self.daphne = next(process for name, process in self.stack.started if name.startswith("daphne"))
        self.poller = self.role("commit poller", "poller", "poller", "--dsn", self.stack.env["DATABASE_URL"],
                                "--poll-ms", str(self.args.poll_ms), "--out", str(self.tmp / "poller.json"))
        self.monitor = None
        if self.args.monitor:
            self.monitor = self.role("Redis MONITOR follower", "monitor", "monitor",
                                     "--out", str(self.tmp / "monitor.json"))

    def start_bots(self) -> None:
        per_bot = self.args.keys_per_bot
        per_thread = self.args.rate / (self.args.bots * per_bot * self.args.threads_per_key)
        for b in range(self.args.bots):
            keys_file = self.tmp / f"bot{b}-keys.json"
            keys_file.write_text(json.dumps(self.keys[b * per_bot:(b + 1) * per_bot]))
            self.bots.append(self.role("bots (REST orders)", "bot", f"bot{b}", "--url", self.rest,
                                       "--keys", str(keys_file), "--per-thread-rate", str(per_thread),
                                       "--threads-per-key", str(self.args.threads_per_key),
                                       "--seed", str(b + 1), "--out", str(self.tmp / f"bot{b}.json")))

    def pause_bots(self, pause: bool) -> None:
        for bot in self.bots:
            os.killpg(bot.pid, signal.SIGSTOP if pause else signal.SIGCONT)

    def watch_backlog(self, stop: threading.Event) -> None:
        """Messages waiting in Redis for Daphne (channels_redis keeps ONE sorted set per server process for
        all its connections, asgi:specific.<process>!), sampled every 0.25 s."""
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        while not stop.is_set():
            try:
                depth = max((r.zcard(k) for k in r.scan_iter(match="asgi*!", count=1000)), default=0)
                self.backlog.append((time.time_ns(), depth))
            except Exception:  # noqa: BLE001, S110 - a monitoring gap is not worth failing the run
                pass
            stop.wait(0.25)

    # -- windows

    def connect(self, tag: str, procs: int, connections: int) -> dict:
        t = time.monotonic()
        outs, started = [], []
        per = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
        for i, n in enumerate(per):
            out = str(self.tmp / f"sub-{tag}-{i}")
            outs.append(out)
            started.append(self.role("subscribers (WebSocket clients)", "subscriber", f"sub-{tag}-{i}",
                                     "--url", self.ws, "--connections", str(n), "--out", out, "--gc", self.args.gc,
                                     "--tick-ms", str(self.args.tick_ms),
                                     "--connect-concurrency", str(self.args.connect_concurrency)))
        self.wait_files([Path(o + ".ready") for o in outs], started, timeout=90)
        ready = [json.loads(Path(o + ".ready").read_text()) for o in outs]
        return {"tag": tag, "procs": procs, "connections": connections, "outs": outs, "started": started,
                "subscribed": sum(r["subscribed"] for r in ready), "connect_seconds": time.monotonic() - t}

    def disconnect(self, clients: dict) -> None:
        """Stop the client processes (every connection closes at once), then count the channels still in
        the book group: a consumer whose group_discard failed stays a member for group_expiry (a day)."""
        import redis

        for process in clients["started"]:
            stop(process, timeout=30)
        time.sleep(2)
        clients["stale_members"] = redis.Redis.from_url(REDIS_URL).zcard(f"asgi:group:book.{PAIR}")

    def window(self, clients: dict, seconds: float) -> dict:
        cpu = CpuWindow(self.groups)
        w0 = time.time_ns()
        cpu.start()
        time.sleep(seconds)
        usage = cpu.stop()
        w1 = time.time_ns()
        time.sleep(self.args.grace)  # deltas committed before w1 may still be on their way
        return {**clients, "w0": w0, "w1": w1, "stopped": time.time_ns(), "cpu": usage}

    def measure(self, tag: str, label: str, procs: int, subscribers: int, seconds: float,
                pause_flow: bool = False) -> dict:
        """Connect ``subscribers`` in ``procs`` client processes, let them settle, measure ``seconds``, disconnect."""
        if pause_flow:
            self.pause_bots(True)
            time.sleep(1)
        clients = self.connect(tag, procs, subscribers)
        if pause_flow:
            self.pause_bots(False)
        paused = " (order flow paused meanwhile)" if pause_flow else ""
        print(f"[{label}] {clients['subscribed']}/{subscribers} subscribed in {clients['connect_seconds']:.1f}s"
              f"{paused}; settling 5s, measuring {seconds:g}s", flush=True)
        time.sleep(5)
        measured = self.window(clients, seconds)
        self.disconnect(clients)
        measured["stale_members"] = clients["stale_members"]
        return measured

    def capacity(self) -> tuple[dict, dict] | None:
        """Flow stopped: 1,000 fresh subscribers, synthetic deltas at fixed rates straight into the channel layer."""
        rates = [r for r in self.args.capacity_rates.split(",") if r.strip()]
        if not rates:
            return None
        for bot in self.bots:
            stop(bot, timeout=30)
        sequence, stable_since = self.book_sequence(), time.monotonic()
        while time.monotonic() - stable_since < 2:  # the matcher has drained its queue
            time.sleep(0.25)
            now = self.book_sequence()
            if now != sequence:
                sequence, stable_since = now, time.monotonic()
        clients = self.connect("capacity", self.args.procs, self.args.subscribers)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.backlog and self.backlog[-1][1] > 0:
            time.sleep(0.25)  # what was queued for the fan-out window's (closed) connections
        time.sleep(2)
        print(f"[capacity] {clients['subscribed']} subscribed in {clients['connect_seconds']:.1f}s; synthetic deltas"
              f" at {', '.join(rates)}/s for {self.args.capacity_seconds:g}s each", flush=True)
        injector = self.role("injector", "injector", "injector", "--rates", ",".join(rates),
                             "--step-seconds", str(self.args.capacity_seconds), "--start-seq", str(sequence),
                             "--daphne-group", str(self.daphne.pid), "--out", str(self.tmp / "injector.json"))
        injector.wait(timeout=len(rates) * (self.args.capacity_seconds + 1) + 60)
        time.sleep(self.args.grace)
        clients["stopped"] = time.time_ns()
        self.disconnect(clients)
        return clients, json.loads((self.tmp / "injector.json").read_text())

    def run(self) -> str:
        a = self.args
        started = time.monotonic()
        load = os.getloadavg()
        self.setup()
        self.start_stack()
        stop_watch = threading.Event()
        threading.Thread(target=self.watch_backlog, args=(stop_watch,), daemon=True).start()
        self.start_bots()
        print(f"stack up at +{time.monotonic() - started:.0f}s; bots asked for {a.rate:g} orders/s; warming up",
              flush=True)
        time.sleep(4)

        baseline = self.measure("baseline", "baseline", 1, a.baseline, a.baseline_seconds)
        fanout = self.measure("fanout", "fan-out", a.procs, a.subscribers, a.seconds, pause_flow=True)

        capacity = self.capacity()
        stop_watch.set()
        for process in [*self.bots, self.poller, *([self.monitor] if self.monitor else [])]:
            stop(process, timeout=30)
        daphne_alive = self.daphne.poll() is None
        report = self.report(baseline, fanout, capacity, load, daphne_alive)
        print(f"total {time.monotonic() - started:.0f}s", flush=True)
        return report

    # -- figures

    def dropped_by_layer(self, w0: int, w1: int) -> int:
        """channels_redis logs "N of M channels over capacity in group G" in the sender (the matcher) when
        a server process's key is full: the message is then dropped for all of that process's connections."""
        from datetime import datetime

        count = 0
        for line in self.stack.log(f"matcher-{PAIR}").read_text(errors="replace").splitlines():
            if "over capacity in group book." not in line:
                continue
            try:
                stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1e9
            except ValueError:
                continue
            if w0 <= stamp < w1:
                count += 1
        return count

    def deliveries(self, window: dict, commits: dict[int, int], w0: int, w1: int) -> dict:
        """Latency of every (subscriber, delta) pair whose commit (or send) time is in [w0, w1)."""
        in_window = {s: t for s, t in commits.items() if w0 <= t < w1}
        latencies, first, last, per_slice = [], {}, {}, {}
        messages = 0
        summaries = []
        for out in window["outs"]:
            summary = json.loads(Path(out + ".json").read_text())
            summaries.append(summary)
            data = array("q")
            with open(out + ".bin", "rb") as f:
                data.fromfile(f, 2 * summary["samples"])
            n = summary["samples"]
            for seq, arrived in zip(data[:n], data[n:]):
                if w0 <= arrived < w1:
                    messages += 1
                committed = in_window.get(seq)
                if committed is None:
                    continue
                latency = arrived - committed
                latencies.append(latency)
                per_slice.setdefault(int((committed - w0) // 10_000_000_000), []).append(latency)
                if arrived < first.get(seq, 1 << 62):
                    first[seq] = arrived
                if arrived > last.get(seq, 0):
                    last[seq] = arrived
            messages += sum(1 for _, t in summary["others"] if w0 <= t < w1)
        latencies.sort()
        subscribed = sum(s["subscribed"] for s in summaries)
        slice_commits: dict[int, int] = {}  # deltas committed per 10 s of the window
        for t in in_window.values():
            key = int((t - w0) // 10_000_000_000)
            slice_commits[key] = slice_commits.get(key, 0) + 1
        expected = len(in_window) * subscribed
        undelivered = max(0, expected - len(latencies))
        # Percentiles over every pair that should have arrived: one that never did (by the end of the
        # grace period) counts as slower than everything delivered.
        censored = latencies + [math.inf] * undelivered
        ms = lambda ns: ns / 1e6
        seconds = (w1 - w0) / 1e9
        others = [kind for s in summaries for kind, _ in s["others"]]
        return {
            "subscribers": subscribed, "seconds": seconds, "deltas": len(in_window),
            "deltas_per_s": len(in_window) / seconds, "samples": len(latencies), "expected": expected,
            "undelivered": undelivered, "messages_per_s": messages / seconds,
            **{name: ms(percentile(censored, q)) for name, q in (("p50", 50), ("p90", 90), ("p99", 99),
                                                                 ("p999", 99.9))},
            "max_delivered": ms(latencies[-1]) if latencies else float("nan"),
            "min": ms(latencies[0]) if latencies else float("nan"),
            "negative": sum(1 for x in latencies if x < 0),
            "over_100ms": sum(1 for x in censored if x > 100_000_000),
            "slices": [ms(percentile(sorted(per_slice.get(k, [])) + [math.inf] * max(
                0, n * subscribed - len(per_slice.get(k, []))), 50)) for k, n in sorted(slice_commits.items())],
            "first": sorted(first[s] - in_window[s] for s in first),
            "spread": sorted(last[s] - first[s] for s in first),
            "jumps": sum(s["jumps"] for s in summaries), "missing": sum(s["missing_in_jumps"] for s in summaries),
            "dups": sum(s["dups"] for s in summaries), "resyncs": sum(s["resync_snapshots"] for s in summaries),
            "errors": [k for k in others if k.startswith("error")],
            "closed": [c for s in summaries for c in s["closed"]],
            "connect_errors": [e for s in summaries for e in s["connect_errors"]],
            "full_collections": sorted(took for s in summaries for start, took in s.get("full_collections", [])
                                       if w0 <= start < w1),
            "backlog_max": max((d for t, d in self.backlog if w0 <= t < w1), default=0),
            "dropped_by_layer": self.dropped_by_layer(w0, window["stopped"]),
        }

    def analyse(self, window: dict, commits: dict[int, int], bot_records: list, monitor: dict | None) -> dict:
        w0, w1 = window["w0"], window["w1"]
        figures = self.deliveries(window, commits, w0, w1)
        seconds = figures["seconds"]
        rest = sorted(d for t, d, what in bot_records if w0 <= t < w1 and what.startswith("create"))
        pending = sum(1 for t, _, what in bot_records if w0 <= t < w1 and what == "create:pending")
        backlog = [d for t, d in self.backlog if w0 <= t < w1]
        daphne_cpu = window["cpu"].get("Daphne (WebSocket)", 0.0)
        figures.update({
            "procs": window["procs"], "grace": (window["stopped"] - w1) / 1e9, "cpu": window["cpu"],
            "connect_seconds": window["connect_seconds"], "stale_members": window.get("stale_members"),
            "orders_per_s": len([1 for t, _, _ in bot_records if w0 <= t < w1]) / seconds,
            "rest_p50": percentile(rest, 50) * 1e3, "rest_p99": percentile(rest, 99) * 1e3,
            "pending_share": pending / max(1, len(rest)), "backlog_end": backlog[-1] if backlog else 0,
            "daphne_us_per_message": (daphne_cpu / figures["messages_per_s"] * 1e6 if figures["messages_per_s"]
                                      else float("nan")),
        })
        if monitor is not None:
            # commit -> the matcher's XADD of the delta (replay buffer) -> its group_send EVAL into Daphne's key
            xadd = {s: t for s, t in monitor["xadds"]}
            evals = sorted(monitor["evals"])
            to_xadd, to_eval = [], []
            import bisect

            for seq, committed in commits.items():
                if not (w0 <= committed < w1) or seq not in xadd:
                    continue
                to_xadd.append(xadd[seq] - committed)
                i = bisect.bisect_left(evals, xadd[seq])
                if i < len(evals) and evals[i] - xadd[seq] < 1_000_000_000 and xadd.get(seq + 1, 1 << 62) > evals[i]:
                    to_eval.append(evals[i] - committed)
            figures["to_xadd"], figures["to_eval"] = sorted(to_xadd), sorted(to_eval)
        return figures

    def report(self, baseline_window: dict, fanout_window: dict, capacity, load, daphne_alive: bool) -> str:
        poller = json.loads((self.tmp / "poller.json").read_text())
        commits = {s: sent for s, sent, _ in poller["seen"]}
        uncertainty = sorted(sent - prev for _, sent, prev in poller["seen"])
        gaps = array("q")
        with open(self.tmp / "poller.json.gaps", "rb") as f:
            gaps.frombytes(f.read())
        gaps = sorted(gaps)
        monitor = json.loads((self.tmp / "monitor.json").read_text()) if self.args.monitor else None
        bot_records, bot_errors = [], {}
        for b in range(self.args.bots):
            data = json.loads((self.tmp / f"bot{b}.json").read_text())
            bot_records.extend(data["records"])
            for name, n in data["errors"].items():
                bot_errors[name] = bot_errors.get(name, 0) + n
        base = self.analyse(baseline_window, commits, bot_records, monitor)
        fan = self.analyse(fanout_window, commits, bot_records, monitor)

        def lat(x: float) -> str:
            return "not delivered" if math.isinf(x) else f"{x:,.1f}"

        def dist(values: list, unit: float = 1e6) -> str:
            if not values:
                return "-"
            return f"{percentile(values, 50) / unit:.1f} / {percentile(values, 99) / unit:.1f}"

        f1 = lambda x: f"{x:,.1f}"
        f0 = lambda x: f"{x:,.0f}"
        pct = lambda f: f"{f['over_100ms']:,} ({100 * f['over_100ms'] / max(1, f['expected']):.1f} %)"
        both = lambda key, fmt: [fmt(fan[key]), fmt(base[key])]
        rows = [
            ["subscribers (client processes)", f"{fan['subscribers']} ({fan['procs']})",
             f"{base['subscribers']} ({base['procs']})"],
            ["measurement window", f"{fan['seconds']:.0f} s (+{fan['grace']:.0f} s grace)",
             f"{base['seconds']:.0f} s (+{base['grace']:.0f} s grace)"],
            ["orders + cancels/s achieved (bots)", *both("orders_per_s", f1)],
            ["REST create p50 / p99 (ms); answered 'pending'",
             f"{fan['rest_p50']:.0f} / {fan['rest_p99']:.0f}; {100 * fan['pending_share']:.0f} %",
             f"{base['rest_p50']:.0f} / {base['rest_p99']:.0f}; {100 * base['pending_share']:.0f} %"],
            ["book deltas committed/s", *both("deltas_per_s", f1)],
            ["messages delivered/s (all subscribers)", *both("messages_per_s", f0)],
            ["deltas delivered / expected (subscriber x delta)", f"{fan['samples']:,} / {fan['expected']:,}",
             f"{base['samples']:,} / {base['expected']:,}"],
            ["commit -> client p50 (ms)", *both("p50", lat)],
            ["commit -> client p90 (ms)", *both("p90", lat)],
            ["commit -> client p99 (ms)", *both("p99", lat)],
            ["commit -> client p99.9 (ms)", *both("p999", lat)],
            ["commit -> client max of those delivered (ms)", *both("max_delivered", f1)],
            ["over 100 ms or not delivered", pct(fan), pct(base)],
            ["p50 per 10 s of the window (ms)", " / ".join(map(lat, fan["slices"])),
             " / ".join(map(lat, base["slices"]))],
        ]
        if monitor is not None:
            rows += [
                ["commit -> matcher's XADD of the delta p50 / p99 (ms)", dist(fan["to_xadd"]), dist(base["to_xadd"])],
                ["commit -> group_send reaches Daphne's Redis key p50 / p99 (ms)", dist(fan["to_eval"]),
                 dist(base["to_eval"])],
            ]
        rows += [
            ["commit -> first subscriber p50 / p99 (ms, deltas delivered)", dist(fan["first"]), dist(base["first"])],
            ["fan-out spread, last - first arrival p50 / p99 (ms)", dist(fan["spread"]), dist(base["spread"])],
            ["subscribers' full GC collections in the window: count, longest (ms)",
             *(f"{len(f['full_collections'])}, {f['full_collections'][-1] / 1e6 if f['full_collections'] else 0:.0f}"
               for f in (fan, base))],
            ["Redis backlog for Daphne, max / at end (capacity 500)", f"{fan['backlog_max']} / {fan['backlog_end']}",
             f"{base['backlog_max']} / {base['backlog_end']}"],
            ["book deltas dropped by the channel layer (over capacity)", *both("dropped_by_layer", str)],
            ["sequence jumps seen by subscribers (deltas skipped)", f"{fan['jumps']} ({fan['missing']})",
             f"{base['jumps']} ({base['missing']})"],
            ["resync snapshots / duplicate deltas", f"{fan['resyncs']} / {fan['dups']}",
             f"{base['resyncs']} / {base['dups']}"],
            ["disconnects / error messages", f"{len(fan['closed'])} / {len(fan['errors'])}",
             f"{len(base['closed'])} / {len(base['errors'])}"],
            ["connect + subscribe all (s)", f"{fan['connect_seconds']:.1f} (flow paused)",
             f"{base['connect_seconds']:.1f}"],
            ["channels left in the book group after all disconnected", *both("stale_members", str)],
            ["Daphne CPU per delivered message (us)", *both("daphne_us_per_message", f0)],
        ]
        labels = sorted(set(fan["cpu"]) | set(base["cpu"]), key=lambda k: (k.startswith("("), k))
        for label in labels:
            rows.append([f"CPU, cores busy: {label}", f"{fan['cpu'].get(label, 0):.2f}",
                         f"{base['cpu'].get(label, 0):.2f}"])
        lines = [
            (f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
            f"{platform.release()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before the run."),
            f"Code: {git_state()}.",
            (f"Flow asked: {self.args.rate:g} orders/s from {self.args.bots} bot processes x "
            f"{self.args.keys_per_bot} keys x {self.args.threads_per_key} threads; gunicorn "
            f"{self.args.gunicorn_workers} workers x {self.args.gunicorn_threads} threads; {self.args.ws_procs} Daphne"
            " process(es)."),
            (f"Commit time: poller every {self.args.poll_ms:g} ms; gap between polls p50"
            f" {percentile(gaps, 50) / 1e6:.2f} ms, p99 {percentile(gaps, 99) / 1e6:.2f} ms, max {gaps[-1] / 1e6 if gaps else float('nan'):.1f} ms;"
            f" for the polls that found a new sequence, gap p50 {percentile(uncertainty, 50) / 1e6:.2f} ms,"
            f" p99 {percentile(uncertainty, 99) / 1e6:.2f} ms (latencies are low by at most that much)."),
            (f"Negative latencies (delta arrived before the poller saw the commit): fan-out {fan['negative']},"
            f" baseline {base['negative']}."),
            f"Bot errors over the run: {bot_errors or 'none'}. Daphne still running at the end: {daphne_alive}.",
            "",
            table(["", f"fan-out ({fan['subscribers']})", f"baseline ({base['subscribers']})"], rows),
        ]
        for name, figures in (("fan-out", fan), ("baseline", base)):
            if figures["closed"] or figures["connect_errors"] or figures["errors"]:
                closes = {}
                for code, reason, _ in figures["closed"]:
                    closes[f"{code} {reason}"[:80]] = closes.get(f"{code} {reason}"[:80], 0) + 1
                lines.append(f"\n{name}: closes {closes}; connect errors {figures['connect_errors'][:3]};"
                             f" error messages {sorted(set(figures['errors']))}")
        if capacity is not None:
            clients, injected = capacity
            sent = {s: t for s, t in injected["sent"]}
            rows = []
            for step in injected["steps"]:
                f = self.deliveries(clients, sent, step["w0"], step["w1"])
                rows.append([f"{step['rate']:g}", f0(f["messages_per_s"]), f"{f['samples']:,} / {f['expected']:,}",
                             lat(f["p50"]), lat(f["p99"]), f"{step['daphne_cores']:.2f}",
                             f0(step["daphne_cores"] / f["messages_per_s"] * 1e6) if f["messages_per_s"] else "-",
                             str(f["backlog_max"])])
            lines += ["", (f"Capacity (order flow stopped; {clients['subscribed']} subscribers; synthetic deltas"
                          f" group_sent by the benchmark; latency from the group_send; channels left in the book"
                          f" group after they disconnected: {clients['stale_members']}; disconnects during the"
                          f" phase: {len(f['closed'])}):"), "",
                      table(["deltas/s sent", "messages/s delivered", "delivered / expected", "p50 (ms)", "p99 (ms)",
                             "Daphne cores", "Daphne us/message", "Redis backlog max"], rows)]
        return "\n".join(lines)


def git_state() -> str:
    def git(*argv: str) -> str:
        result = subprocess.run(["git", *argv], check=False, cwd=ROOT, capture_output=True, text=True)
        return result.stdout.rstrip("\n")

    changed = [line[3:] for line in git("status", "--short", "--untracked-files=no").splitlines()]
    head = git("rev-parse", "--short", "HEAD") or "?"
    return f"commit {head}" + (f", working tree with uncommitted changes to {', '.join(changed)}" if changed else "")


def main_role(args) -> int:
    if args.subscribers < args.procs:
        raise SystemExit("--subscribers must be at least --procs")

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    bench = Bench(args)
    ok = False
    try:
        report = bench.run()
        ok = True
    finally:
        bench.cleanup(ok)
    print()
    print(report)
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    roles = {"subscriber": lambda a: subscriber_loop(a).run_until_complete(subscriber_main(a)), "bot": bot_main,
             "poller": poller_main, "injector": injector_main, "monitor": monitor_main}
    if arguments.role in roles:
        roles[arguments.role](arguments)
    else:
        sys.exit(main_role(arguments))
