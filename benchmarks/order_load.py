"""Signed POST /v1/orders under the production topology: throughput, latency, errors, matched vs pending.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):

    .venv/bin/python benchmarks/order_load.py                       # sync:2, sync:4, gthread:2x8; 20 s each
    .venv/bin/python benchmarks/order_load.py --configs sync:2 --duration 10 --bots 32

Topology per configuration, all on loopback, started by tests/stack.py as for the end-to-end tests:
gunicorn (exchange.wsgi, exchange/gunicorn.conf.py as in production) with the given workers, one
Celery matcher for BTC-USD (queue match.BTC-USD, --pool solo, concurrency 1, as bin/start-matchers),
PostgreSQL (a copy of a prepared ``bench_load_...`` database, so every configuration starts from the
same state) and Redis db 3, or ``BENCH_REDIS_DB`` (flushed before each configuration).

Load generator: this process, asyncio with a minimal HTTP/1.1 client (keep-alive when the server
allows it; gunicorn's sync workers close every connection), ``--bots`` concurrent bots in a closed
loop (next request as soon as the previous answer arrived), each with its own API key and account,
signing every request (hkt_client.signing). Orders: ~85 % resting limit orders far from each other
(bids 50,000-59,000, asks 61,000-70,000 USD, random cents) and ~15 % crossing ones (buy at 61,500,
sell at 58,500), each with a client_order_id. Budgets are raised (retail tier, public weight) so
rate limits never bite.

Per configuration: a trivial unsigned GET /v1/time under the same gunicorn at the same concurrency
(the baseline), then POST /v1/orders for ``--warmup`` + ``--duration`` seconds; requests that ended in
the measured window are counted. CPU per process group is sampled from /proc over the window.
Prints figures; asserts nothing about speed. Databases are dropped and processes stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuSampler, bench_stack, machine, percentile, table  # noqa: E402
from hkt_client.signing import signed_headers  # noqa: E402

PAIR = "BTC-USD"
BIG_BUDGET = 1_000_000_000


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="sync:2,sync:4,gthread:2x8",
                        help="comma-separated gunicorn configurations: sync:<workers> or gthread:<workers>x<threads>")
    parser.add_argument("--bots", type=int, default=64, help="concurrent bots (connections), each its own key")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds of POST /v1/orders")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--get-duration", type=float, default=5.0, help="measured seconds of the GET baseline")
    parser.add_argument("--crossing", type=float, default=0.15, help="share of crossing orders")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request (s)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="open loop: POSTs per second from all bots together, each bot on a fixed schedule, "
                             "latency counted from the scheduled send (0: closed loop, the default)")
    return parser.parse_args()


# -- the load generator: a minimal asyncio HTTP/1.1 client


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        if body:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            payload = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            payload = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                payload += chunk[:-2]
        else:
            payload = await self.reader.read()
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, payload


def order_body(rng: random.Random, crossing: float, bot: int, serial: int) -> bytes:
    if rng.random() < crossing:
        side = rng.choice(("buy", "sell"))
        price = "61500.00" if side == "buy" else "58500.00"
        size = "0.00050000"
    else:
        side = rng.choice(("buy", "sell"))
        cents = rng.randint(100_000, 1_000_000)  # 1,000.00 - 10,000.00 USD away from 60,000
        price_cents = 6_000_000 - cents if side == "buy" else 6_000_000 + cents
        price = f"{price_cents // 100}.{price_cents % 100:02d}"
        size = f"0.{rng.randint(10_000, 200_000):08d}"  # 0.0001 - 0.002 BTC
    return json.dumps({"pair": PAIR, "side": side, "type": "limit", "price": price, "size": size,
                       "client_order_id": f"b{bot}-{serial}"}, separators=(",", ":")).encode()


async def drive(port: int, kind: str, keys: list[dict], seconds: float, warmup: float, crossing: float,
                timeout: float, run_tag: str, rate: float = 0.0) -> dict:
    """Closed loop: each bot sends its next request as soon as the previous one was answered. Open
    loop (``rate``): each bot sends on a fixed schedule, ``len(keys) / rate`` seconds apart, and a
    request's latency runs from its scheduled time, so a late answer delays the next send without
    hiding its own wait (no coordinated omission)."""
    records = []  # (when it counts: end time, or the scheduled send in the open loop; latency s; http status; detail)
    start = time.perf_counter()
    window_start, window_end = start + warmup, start + warmup + seconds
    interval = len(keys) / rate if rate else 0.0

    async def bot(index: int, credentials: dict):
        rng = random.Random(f"{run_tag}-{index}")
        connection = Connection(port)
        serial = 0
        scheduled = start + interval * index / len(keys)  # the bots' schedules spread evenly
        # The open loop sends everything scheduled in the window, late or not: the slowest must count.
        while (scheduled if interval else time.perf_counter()) < window_end:
            serial += 1
            if interval:
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            if kind == "get":
                method, path, body, headers = "GET", "/v1/time", b"", {}
            else:
                method, path = "POST", "/v1/orders"
                body = order_body(rng, crossing, index, serial)
                headers = signed_headers(credentials["key"], credentials["secret"], method, path, body)
            sent = scheduled if interval else time.perf_counter()
            scheduled += interval
            try:
                status, payload = await asyncio.wait_for(connection.request(method, path, headers, body), timeout)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                    ValueError) as error:
                await connection.close()
                records.append((sent if interval else time.perf_counter(), time.perf_counter() - sent, 0,
                                type(error).__name__))
                continue
            ended = time.perf_counter()
            detail = ""
            if kind == "post":
                try:
                    document = json.loads(payload)
                    detail = document.get("status", "") if status < 400 else document.get("error", {}).get("code", "")
                except ValueError:
                    detail = "unparsable body"
            records.append((sent if interval else ended, ended - sent, status, detail))
        await connection.close()

    await asyncio.gather(*(bot(i, keys[i % len(keys)]) for i in range(len(keys))))
    measured = [r for r in records if window_start <= r[0] <= window_end]
    ok = sorted(r[1] for r in measured if 200 <= r[2] < 300)
    return {
        "seconds": seconds, "requests": len(measured), "ok": len(ok), "ok_per_s": len(ok) / seconds,
        "p50_ms": percentile(ok, 50) * 1000, "p90_ms": percentile(ok, 90) * 1000,
        "p99_ms": percentile(ok, 99) * 1000, "max_ms": (ok[-1] * 1000) if ok else float("nan"),
        "statuses": dict(Counter(str(r[2]) for r in measured)),
        "errors": dict(Counter(f"{r[2]} {r[3]}".strip() for r in measured if not 200 <= r[2] < 300)),
        "order_status": dict(Counter(r[3] for r in measured if 200 <= r[2] < 300)) if kind == "post" else {},
    }


def classify(port: int, database: str, matcher: int):
    """Process groups; the matcher is this stack's by its pid (another stack's matcher of the pair, such
    as a running sandbox's, serves another queue and counts among the others)."""
    own = os.getpid()

    def group(pid: int, comm: str, cmdline: str) -> str:
        if pid == own:
            return "load generator (this process)"
        if "gunicorn" in cmdline and f":{port}" in cmdline:
            return "gunicorn (all workers + arbiter)"
        if pid == matcher:
            return "celery matcher"
        if comm.startswith("postgres") or cmdline.startswith("postgres"):
            return "postgres: this database" if f" {database} " in f"{cmdline} " else "postgres: other backends"
        if "redis-server" in comm or "redis-server" in cmdline:
            return "redis-server (shared)"
        return "other processes (not this benchmark)"

    return group


def db_summary(dsn: str) -> dict:
    import psycopg

    with psycopg.connect(dsn) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM trading_order GROUP BY status").fetchall())
        queued = conn.execute("SELECT count(*) FROM trading_matchercommand").fetchone()[0]
        trades = conn.execute("SELECT count(*) FROM trading_trade").fetchone()[0]
        batches = int(conn.execute("SELECT coalesce(sum(batches), 0) FROM trading_bookstate").fetchone()[0])
    return {"orders": statuses, "queued_commands": queued, "trades": trades, "matcher_batches": batches}


def run_config(spec: str, template, keys: list[dict], args) -> dict:
    """One gunicorn configuration on a copy of the template stack's database, with a matcher for the pair."""
    kind, _, shape = spec.partition(":")
    if kind == "sync":
        workers, options = shape, ["--worker-class", "sync", "--threads", "1"]
    elif kind == "gthread":
        workers, _, threads = shape.partition("x")
        options = ["--worker-class", "gthread", "--threads", threads]
    else:
        raise ValueError(f"unknown configuration {spec!r}")
    with template.clone(f"{kind}{shape.replace('x', '_')}") as stack:
        result = {"config": spec, "database": stack.database}
        matcher = stack.start_matcher(PAIR)
        port = int(stack.start_rest(int(workers), *options).rsplit(":", 1)[1])
        matcher_log, web_log = stack.log(f"matcher-{PAIR}"), stack.log(f"gunicorn-{port}")

        result["get"] = asyncio.run(drive(port, "get", keys[: args.bots], args.get_duration, 1.0, 0.0,
                                          args.timeout, f"{spec}-get"))
        sampler = CpuSampler(classify(port, stack.database, matcher.pid))

        async def post_with_cpu():
            task = asyncio.ensure_future(drive(port, "post", keys[: args.bots], args.duration, args.warmup,
                                               args.crossing, args.timeout, f"{spec}-post", args.rate))
            await asyncio.sleep(args.warmup)
            sampler.start()
            await asyncio.sleep(args.duration)
            cpu = sampler.stop()
            cpu["_others"] = sampler.others[:3]
            return await task, cpu

        result["post"], result["cpu"] = asyncio.run(post_with_cpu())
        result["db_at_end"] = db_summary(stack.env["DATABASE_URL"])
        time.sleep(1.0)
        result["db_after_1s"] = db_summary(stack.env["DATABASE_URL"])
        result["matcher_log_tail"] = "\n".join(
            line for line in matcher_log.read_text().splitlines()[-200:] if "ERROR" in line or "Traceback" in line
        )[-2000:]
        result["web_log_errors"] = "\n".join(
            line for line in web_log.read_text().splitlines() if "ERROR" in line or "Traceback" in line
        )[-2000:]
    return result


def main() -> None:
    args = parse_args()
    print(f"order_load {date.today()}  {machine()}")
    loop = f"open loop, {args.rate:g} POSTs/s in all" if args.rate else "closed loop"
    print(f"{args.bots} concurrent bots ({loop}, each its own key), POST /v1/orders {PAIR} for "
          f"{args.warmup:.0f} s warm-up + {args.duration:.0f} s measured; GET /v1/time baseline {args.get_duration:.0f} s; "
          f"~{args.crossing:.0%} crossing orders")
    started = time.perf_counter()
    results, failed = [], False
    with bench_stack("bench_load", PUBLIC_WEIGHT_PER_MINUTE=str(BIG_BUDGET), DEBUG="false") as template:
        template.manage("shell", "-c", "from accounts.models import RateTier; "
                                       f"RateTier.objects.update(weight_per_minute={BIG_BUDGET})")
        keys = template.create_traders([f"loadbot{i}" for i in range(args.bots)], "USD=100000000", "BTC=100000")
        print(f"setup (migrate, markets, {len(keys)} funded bots with keys): {time.perf_counter() - started:.1f} s")
        for spec in [s.strip() for s in args.configs.split(",") if s.strip()]:
            try:
                results.append(run_config(spec, template, keys, args))
            except Exception as error:  # noqa: BLE001 - report and go on with the next configuration
                failed = True
                print(f"{spec}: FAILED: {type(error).__name__}: {error}")
        template.flush_redis()
    if failed:
        print(f"logs kept in {template.tmp}")
    else:
        shutil.rmtree(template.tmp, ignore_errors=True)  # process logs

    rows = []
    for r in results:
        get, post = r["get"], r["post"]
        pending = post["order_status"].get("pending", 0)
        answered = post["ok"] - pending
        rows.append([r["config"], f"{get['ok_per_s']:,.0f}", f"{get['p50_ms']:.1f}", f"{get['p99_ms']:.1f}",
                     f"{post['ok_per_s']:,.0f}", f"{post['p50_ms']:.1f}", f"{post['p90_ms']:.1f}",
                     f"{post['p99_ms']:.1f}", f"{post['max_ms']:.0f}",
                     f"{answered:,} / {pending:,}",
                     ", ".join(f"{k}: {v}" for k, v in sorted(post["errors"].items())) or "none"])
    print()
    print(table(["gunicorn", "GET /v1/time req/s", "GET p50 ms", "GET p99 ms", "POST creates/s", "p50 ms", "p90 ms",
                 "p99 ms", "max ms", "matched / pending", "errors (measured window)"], rows))
    for r in results:
        post = r["post"]
        print()
        print(f"{r['config']}: order status in the 201 responses: "
              + ", ".join(f"{k}: {v:,}" for k, v in sorted(post["order_status"].items(), key=lambda kv: -kv[1])))
        print(f"  GET errors: {r['get']['errors'] or 'none'}")
        end = r["db_at_end"]
        processed = sum(end["orders"].values()) - end["orders"].get("pending", 0)
        print(f"  database at the end: {end}; 1 s later: queued {r['db_after_1s']['queued_commands']}")
        print(f"  matcher: {end['matcher_batches']:,} batches for {processed:,} processed orders "
              f"(~{processed / max(end['matcher_batches'], 1):.1f} per batch, whole run incl. warm-up)")
        cpu = dict(r["cpu"])
        others = cpu.pop("_others", [])
        print("  CPU over the measured window (cores busy on average): "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])))
        if others:
            print("  busiest other processes: " + "; ".join(f"{v:.2f} {c}" for v, c in others))
        if r["matcher_log_tail"]:
            print(f"  matcher log errors:\n{r['matcher_log_tail']}")
        if r["web_log_errors"]:
            print(f"  gunicorn log errors:\n{r['web_log_errors']}")
    print(f"\naims: >= 1,000 creates/s and p99 < 50 ms. total run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
