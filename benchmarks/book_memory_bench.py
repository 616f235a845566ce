"""A matcher holding a large book: its memory, and how long it takes to rebuild the book on a restart.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):

    .venv/bin/python benchmarks/book_memory_bench.py                      # 1,000,000 resting orders, 3 runs
    .venv/bin/python benchmarks/book_memory_bench.py -n 200000 --old /tmp/old-checkout   # alternating with older code

1. The engine alone: a fresh process (no Django) applies N non-crossing GTC limit orders to
   ``trading.engine.OrderBook``; its resident memory after (VmRSS) and at its peak (VmHWM), and the
   same process's memory before the first order.
2. A database of the end-to-end tests' stack (tests/stack.py: migrate, demo markets) with N open orders
   on BTC-USD resting on both sides without crossing, over 20 accounts, each holding what its size needs
   (rows only, inserted by SQL: a rebuild reads orders, not balances).
3. A restart: a fresh process sets Django up and has the pair's matcher rebuild its book from that
   database (``PairMatcher.lock_book`` in one transaction, as a matcher's first batch does); the time of
   the rebuild, then the process's memory with the book held (VmRSS) and at its peak (VmHWM). Run
   ``--runs`` times, alternating with the code at ``--old`` when given (same interpreter, that tree
   on the path), so that both see the same machine.

Prints figures only; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_stack, machine, table

ROOT = Path(__file__).resolve().parent.parent
PAIR = "BTC-USD"
MID_TICKS = 6_000_000  # 60,000.00 USD at tick 0.01
LEVELS = 5_000  # price levels per side

MEMORY = """
def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}
"""

ENGINE_ONLY = MEMORY + """
import json, sys, time
from trading import engine
n, mid, levels = map(int, sys.argv[1:4])
before = memory()["VmRSS"]
book = engine.OrderBook("BTC-USD")
started = time.process_time()
for i in range(n):
    buy = i % 2 == 0
    price = mid - 1 - i % levels if buy else mid + 1 + i % levels
    book.apply(engine.NewOrder(i + 1, 1 + i % 20, "buy" if buy else "sell", "limit", price, 1 + i % 7))
seconds = time.process_time() - started
assert len(book) == n
print(json.dumps({"before": before, **memory(), "seconds": seconds}))
"""

REBUILD = MEMORY + """
import json, os, sys, time
import django
django.setup()
from django.db import connection, transaction
from trading.matcher import PairMatcher

def cpu_of(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

with connection.cursor() as cursor:
    cursor.execute("SELECT pg_backend_pid()")
    backend = cursor.fetchone()[0]
print(json.dumps({"backend": backend}), flush=True)
before = memory()["VmRSS"]
matcher = PairMatcher(sys.argv[1])
started, cpu, server = time.perf_counter(), time.process_time(), cpu_of(backend)
with transaction.atomic():
    matcher.lock_book()
seconds, cpu, server = time.perf_counter() - started, time.process_time() - cpu, cpu_of(backend) - server
print(json.dumps({"before": before, **memory(), "seconds": seconds, "cpu": cpu, "server": server,
                  "resting": len(matcher.book), "copies": len(matcher.orders)}))
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--orders", type=int, default=1_000_000, help="resting orders (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="rebuilds per code tree (default 3)")
    parser.add_argument("--old", type=Path, action="append", default=[],
                        help="a checkout of older code to alternate with (again for more)")
    parser.add_argument("--database", default="bench_book", help="the name the test database's starts with")
    return parser.parse_args()


def run(code: str, args: list[str], env: dict, tree: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], check=False, cwd=tree,
                            env={**env, "PYTHONPATH": str(tree)},
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command's name (state, ppid, ...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    fields = stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rebuild(env: dict, tree: Path) -> dict:
    """A rebuild in a fresh process; PostgreSQL's CPU for it is its backend's (measured by that process)
    and the parallel workers' that backend started (sampled here every 50 ms while they run: a worker
    that ends between two samples loses at most its last 50 ms)."""
    process = subprocess.Popen([sys.executable, "-c", REBUILD, PAIR], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    backend = json.loads(process.stdout.readline() or "{}").get("backend")
    postmaster = backend and int(stat(backend)[1])
    workers: dict[int, float] = {}
    while process.poll() is None and postmaster:
        with open(f"/proc/{postmaster}/task/{postmaster}/children") as f:
            children = f.read().split()
        for child in map(int, children):
            try:
                with open(f"/proc/{child}/cmdline") as f:
                    if f"parallel worker for PID {backend}" in f.read():
                        workers[child] = cpu_seconds(child)
            except (FileNotFoundError, ProcessLookupError):
                pass
        time.sleep(0.05)
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(err[-3000:])
    return {**json.loads(out.strip().splitlines()[-1]), "workers": sum(workers.values()),
            "load": os.getloadavg()[0]}


def fill_book(stack, orders: int) -> None:
    """``orders`` open orders on PAIR, alternately bids below and asks above the mid, by SQL: one order
    made with the ORM is the template of the rest (whatever columns the model has), then removed."""
    import django
    os.environ.update(stack.env)
    django.setup()
    from django.db import connection

    from accounts.models import Account
    from trading.models import BookState, Market, Order

    stack.create_traders([f"resting{i}" for i in range(20)])
    market = Market.objects.with_assets().get(pair=PAIR)
    accounts = list(Account.objects.order_by("pk").values_list("pk", flat=True))[-20:]
    template = Order.objects.create(account_id=accounts[0], market=market, side="buy", type="limit", price=1, size=1,
                                    status="open", hold_asset_id=market.quote_id, hold_remaining=1, request_digest="x")
    columns = [field.column for field in Order._meta.concrete_fields if field.column != "id"]
    tick, lot = market.tick_size, market.lot_size
    ticks = f"CASE WHEN mod(g, 2) = 0 THEN {MID_TICKS} - 1 - mod(g, {LEVELS}) ELSE {MID_TICKS} + 1 + mod(g, {LEVELS}) END"
    computed = {
        "account_id": f"(ARRAY{accounts})[1 + mod(g, 20)]",
        "side": "CASE WHEN mod(g, 2) = 0 THEN 'buy' ELSE 'sell' END",
        "price": f"({ticks}) * {tick}",
        "size": f"(1 + mod(g, 7)) * {lot}",
        "hold_asset_id": f"CASE WHEN mod(g, 2) = 0 THEN {market.quote_id} ELSE {market.base_id} END",
        "hold_remaining": f"CASE WHEN mod(g, 2) = 0 THEN ({ticks}) * {tick} * (1 + mod(g, 7)) * {lot} "
                          f"ELSE (1 + mod(g, 7)) * {lot} END",
        "book_priority": "g + 1",
        "client_order_id": "NULL",
    }
    select = ", ".join(computed.get(column, f't."{column}"') for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(f'INSERT INTO trading_order ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)}) '
                       f"SELECT {select} FROM trading_order t, generate_series(0, %s) g WHERE t.id = %s",
                       [orders - 1, template.pk])
        template.delete()
        cursor.execute("ANALYZE trading_order")
    BookState.objects.update_or_create(market=market, defaults={"last_priority": orders})
    connection.close()


def main() -> None:
    args = parse_args()
    print(f"book_memory_bench {date.today()}  {machine()}")
    engine = run(ENGINE_ONLY, [str(args.orders), str(MID_TICKS), str(LEVELS)], dict(os.environ), ROOT)
    print(f"engine alone, {args.orders:,} resting orders: {engine['VmRSS']:.0f} MB resident "
          f"({engine['VmRSS'] - engine['before']:.0f} MB over the {engine['before']:.0f} MB of a bare process), "
          f"peak {engine['VmHWM']:.0f} MB; applied in {engine['seconds']:.1f} s of CPU")
    stack = bench_stack(args.database)
    with stack:
        fill_book(stack, args.orders)
        trees = [("this tree", ROOT)] + [(f"old {tree.name}", tree) for tree in args.old]
        rows = []
        for number in range(args.runs):
            for name, tree in trees:
                result = rebuild(stack.env, tree)
                rows.append([name, str(number + 1), f"{result['seconds']:.1f}", f"{result['cpu']:.2f}",
                             f"{result['server']:.2f} + {result['workers']:.2f}", f"{result['load']:.1f}",
                             f"{result['VmRSS']:.0f}", f"{result['VmRSS'] - result['before']:.0f}",
                             f"{result['VmHWM']:.0f}", f"{result['resting']:,}", f"{result['copies']:,}"])
                print(" | ".join(rows[-1]), flush=True)
    shutil.rmtree(stack.tmp, ignore_errors=True)
    print()
    print(f"Rebuild of a book of {args.orders:,} resting orders from PostgreSQL, each run a fresh process:")
    print(table(["code", "run", "rebuild s", "CPU s", "PostgreSQL CPU s (backend + workers)", "load average",
                 "RSS MB", "of which the book", "peak RSS MB", "resting", "working copies"], rows))


if __name__ == "__main__":
    main()
