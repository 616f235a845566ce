"""A lightly loaded matcher: the CPU its process takes per order at a steady flow of orders.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):

    .venv/bin/python benchmarks/matcher_wakeups.py                        # 100 and 20 orders/s, 30 s each
    .venv/bin/python benchmarks/matcher_wakeups.py --rates 100 --seconds 60

A stack as the end-to-end tests start it (tests/stack.py: PostgreSQL, Redis db 3 or ``BENCH_REDIS_DB``) and
the BTC-USD matcher as bin/start-matchers starts it. A driver process (``manage.py shell``) accepts orders
through ``trading.services.place_order`` (each commit wakes the matcher, as a request's does) on a fixed
schedule, from 8 funded accounts: ~85 % resting limit orders far apart and ~15 % crossing ones, as
``order_load.py`` sends them, without HTTP, so that the rest of the machine stays quiet. Measured: the
matcher process's CPU time (utime + stime of all its threads, from /proc: not wall time, the machine may
be shared) over the driver's run, per order, and the batches it committed. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_stack, machine  # noqa: E402

PAIR = "BTC-USD"
DRIVER = """
import random, time
from decimal import Decimal
from accounts.models import Account
from trading import services
from trading.orders import OrderRequest
accounts = list(Account.objects.filter(pk__in={ids}))
rng, rate, count = random.Random({seed}), {rate}, int({rate} * {seconds})
start = time.monotonic()
for n in range(count):
    pause = start + n / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    side = rng.choice(("buy", "sell"))
    if rng.random() < 0.15:
        price, size = Decimal("61500" if side == "buy" else "58500"), Decimal("0.0005")
    else:
        cents = rng.randint(100_000, 1_000_000)
        price = Decimal(6_000_000 - cents if side == "buy" else 6_000_000 + cents) / 100
        size = Decimal(rng.randint(10_000, 200_000)) / 100_000_000
    services.place_order(rng.choice(accounts), OrderRequest(pair="{pair}", side=side, type="limit", price=price,
                                                            size=size))
print("late by", round(time.monotonic() - start - count / rate, 2), "s")
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batches(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT coalesce(sum(batches), 0) FROM trading_bookstate").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,20", help="comma-separated orders per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"matcher_wakeups {date.today()}  {machine()}")
    with bench_stack("bench_wakeups") as stack:
        ids = [key["account_id"] for key in
               stack.create_traders([f"driver{i}" for i in range(8)], "USD=100000000", "BTC=100000")]
        matcher = stack.start_matcher(PAIR)
        dsn = stack.env["DATABASE_URL"]
        for seed, rate in enumerate(float(r) for r in args.rates.split(",")):
            time.sleep(3)  # the last run's tail drained
            cpu_before, batches_before, wall = cpu_seconds(matcher.pid), batches(dsn), time.monotonic()
            driver = DRIVER.format(ids=ids, seed=seed, rate=rate, seconds=args.seconds, pair=PAIR)
            late = stack.manage("shell", "--no-imports", "-c", driver).strip().splitlines()[-1]
            time.sleep(1)  # the last orders matched
            cpu = cpu_seconds(matcher.pid) - cpu_before
            wall = time.monotonic() - wall
            orders = int(rate * args.seconds)
            done = batches(dsn) - batches_before
            print(f"{rate:g} orders/s for {args.seconds:g} s ({late}): matcher {cpu:.2f} s of CPU over {wall:.0f} s "
                  f"({cpu / wall:.3f} of a core), {cpu / orders * 1000:.2f} ms per order; {done:,} batches, "
                  f"{orders / max(done, 1):.2f} orders a batch, {cpu / max(done, 1) * 1000:.2f} ms per batch")


if __name__ == "__main__":
    main()
