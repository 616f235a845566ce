"""Idle matchers: the CPU that N pairs' matchers take on one worker host while no order comes in.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):

    .venv/bin/python benchmarks/idle_matchers.py                  # 50 pairs, one worker serving all 50 queues
    .venv/bin/python benchmarks/idle_matchers.py --workers 50     # one worker per pair, as bin/supervise runs them
    .venv/bin/python benchmarks/idle_matchers.py --pairs 50 --seconds 60 --settle 15

A stack as the end-to-end tests start it (tests/stack.py: PostgreSQL, Redis db 3 or ``BENCH_REDIS_DB``) with
``--pairs`` markets added (assets I01, I02, ... against USD). Celery workers are started as bin/start-matchers
starts them (``--pool solo``, concurrency 1), ``--workers`` of them with the pairs' queues ``match.<PAIR>``
dealt out among them. After ``--settle`` seconds (each matcher has drained its empty queue), the process
CPU time (utime + stime from /proc, not wall time: the machine may be shared) of the workers and of this
database's PostgreSQL backends is taken over ``--seconds``; PostgreSQL's autovacuum workers on this database
(a new database's tables get analyzed while it idles) apart. Redis is shared with other work, so its own CPU
is not counted. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuSampler, bench_stack, machine  # noqa: E402

MARKETS = """
from decimal import Decimal
from trading.models import Asset, Market
usd = Asset.objects.get(symbol="USD")
for i in range(1, {pairs} + 1):
    base = Asset.objects.create(symbol=f"I{{i:02d}}", name=f"Idle {{i}}", precision=8)
    Market.objects.create(base=base, quote=usd, tick_size=Decimal("0.01"), lot_size=Decimal("0.0001"),
                          min_size=Decimal("0.001"), min_notional=Decimal("1.00"))
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="worker processes the pairs are dealt out to")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured idle seconds")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the workers are ready")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(f"idle_matchers {date.today()}  {machine()}")
    with bench_stack("bench_idle") as stack:
        stack.manage("shell", "-c", MARKETS.format(pairs=args.pairs))
        pairs = [f"I{i:02d}-USD" for i in range(1, args.pairs + 1)]
        for worker in range(args.workers):
            queues = ",".join(f"match.{pair}" for pair in pairs[worker::args.workers])
            stack.start(f"worker-{worker}", [
                "celery", "-A", "exchange", "worker", "--queues", queues, "--concurrency", "1", "--pool", "solo",
                "--hostname", f"idle-{worker}-{uuid.uuid4().hex[:6]}@bench", "--without-gossip", "--without-mingle",
                "--loglevel", "INFO"], ready_text=" ready.")
        time.sleep(args.settle)

        def group(pid: int, comm: str, cmdline: str) -> str:
            if "celery" in cmdline and "match.I" in cmdline:
                return "workers"
            postgres = comm.startswith("postgres") or cmdline.startswith("postgres")
            if postgres and f" {stack.database} " in f"{cmdline} ":
                return "postgres autovacuum" if "autovacuum" in cmdline else "postgres backends"
            return "other"

        sampler = CpuSampler(group)
        sampler.start()
        time.sleep(args.seconds)
        cpu = sampler.stop()
        seconds = time.monotonic() - sampler.t0
        workers = sum(1 for _, kind, _ in sampler.per_pid.values() if kind == "workers")
        print(f"{args.pairs} idle pairs on {args.workers} worker process(es), {seconds:.0f} s measured "
              f"({workers} worker processes used CPU)")
        for name in ("workers", "postgres backends", "postgres autovacuum"):
            used = cpu.get(name, 0.0)
            print(f"  {name}: {used * 1000:.2f} ms of CPU per second ({used * 100:.3f} % of a core), "
                  f"{used * 1000 / args.pairs:.3f} ms/s per pair")


if __name__ == "__main__":
    main()
