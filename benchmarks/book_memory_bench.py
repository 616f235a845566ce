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
import json, sys, time
import django
django.setup()
from django.db import transaction
from trading.matcher import PairMatcher
before = memory()["VmRSS"]
matcher = PairMatcher(sys.argv[1])
started, cpu = time.perf_counter(), time.process_time()
with transaction.atomic():
    matcher.lock_book()
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"before": before, **memory(), "seconds": seconds, "cpu": cpu, "resting": len(matcher.book),
                  "copies": len(matcher.orders)}))
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--orders", type=int, default=1_000_000, help="resting orders (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="rebuilds per code tree (default 3)")
    parser.add_argument("--old", type=Path, help="a checkout of older code to alternate with")
    return parser.parse_args()


def run(code: str, args: list[str], env: dict, tree: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], check=False, cwd=tree,
                            env={**env, "PYTHONPATH": str(tree)},
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    stack = bench_stack("bench_book")
    with stack:
        fill_book(stack, args.orders)
        trees = [("this tree", ROOT)] + ([("old", args.old)] if args.old else [])
        rows = []
        for number in range(args.runs):
            for name, tree in trees:
                result = run(REBUILD, [PAIR], stack.env, tree)
                rows.append([name, str(number + 1), f"{result['seconds']:.1f}", f"{result['cpu']:.1f}",
                             f"{result['VmRSS']:.0f}", f"{result['VmRSS'] - result['before']:.0f}",
                             f"{result['VmHWM']:.0f}", f"{result['resting']:,}", f"{result['copies']:,}"])
                print(" | ".join(rows[-1]), flush=True)
    shutil.rmtree(stack.tmp, ignore_errors=True)
    print()
    print(f"Rebuild of a book of {args.orders:,} resting orders from PostgreSQL, each run a fresh process:")
    print(table(["code", "run", "rebuild s", "CPU s", "RSS MB", "of which the book", "peak RSS MB", "resting",
                 "working copies"], rows))


if __name__ == "__main__":
    main()
