"""What recording the metrics (exchange/metrics.py) costs: per HTTP request and per matcher batch, alone.

Run from the repository root:

    .venv/bin/python benchmarks/metrics_bench.py            # 20,000 requests, 200 batches of 2,000 commands
    .venv/bin/python benchmarks/metrics_bench.py -n 5000

Each mode in a subprocess of its own, since prometheus_client chooses how values are stored at import:

- ``multiprocess``: PROMETHEUS_MULTIPROC_DIR set (a temporary directory), as every production process runs:
  each value is a double in a memory-mapped file, written under a lock;
- ``single``: no directory (the embedded default, ``make run``): values in the process's memory.

Timed, with CPU time (``time.process_time``) of this process over the loop, divided per item:

- ``request``: MetricsMiddleware.record for a request whose children are bound (the steady state: a counter
  and a histogram; an auth refusal adds a counter);
- ``batch``: PairMetrics.matched and committed for a batch of 2,000 commands (the lag of each command, into
  the histogram at once; the book's depth; write time, size, commands, trades, sequence).

The cost of the request or batch around it is measured by auth_bench.py and matcher_bench.py with and without
the metrics (docs/performance.md, "Metrics"). Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 2000


def measure(requests: int, batches: int) -> dict:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
    import django

    django.setup()
    from types import SimpleNamespace

    from exchange.metrics_http import MetricsMiddleware
    from trading.batch_writer import BatchResult, BookDelta
    from trading.matcher import PairMetrics

    middleware = MetricsMiddleware(lambda request: None)
    request = SimpleNamespace(resolver_match=SimpleNamespace(view_name="order-list"), method="POST")
    answered = SimpleNamespace(status_code=201)
    refused = SimpleNamespace(status_code=401, error_code="INVALID_SIGNATURE")
    figures = {}
    for name, response in (("request", answered), ("refused request", refused)):
        middleware.record(request, response, 0.004)  # binds the children
        started = time.process_time()
        for _ in range(requests):
            middleware.record(request, response, 0.004)
        figures[name] = (time.process_time() - started) / requests

    pair = PairMetrics("BENCH-USD")
    book = SimpleNamespace(level_counts=lambda: (1200, 1300))
    queued = time.time() - 0.05
    commands = [(i, "new", i, queued + i / 1e6) for i in range(BATCH)]
    result = BatchResult(market=None, commands=BATCH, states={}, orders=[], trades=[None] * 300, fills=[],
                         delta=BookDelta(sequence=1, bids=[], asks=[], top_bids=[], top_asks=[]))
    started = time.process_time()
    for _ in range(batches):
        pair.matched(commands, book)
        pair.committed(result, time.perf_counter())
    figures["batch"] = (time.process_time() - started) / batches
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--requests", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.requests, args.batches)))
        return
    print(f"metrics_bench: {args.requests:,} requests, {args.batches} batches of {BATCH:,} commands; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| mode | request µs | auth-refused request µs | batch of 2,000 µs |")
    print("|---|---|---|---|")
    for mode in ("multiprocess", "single"):
        with tempfile.TemporaryDirectory(prefix="metrics-bench-") as directory:
            env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
            env.update({"EXCHANGE_VAR_DIR": directory, "DATABASE_URL": "", "REDIS_URL": ""})
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            out = subprocess.run([sys.executable, __file__, "--worker", "-n", str(args.requests), "--batches",
                                  str(args.batches)], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {mode} | {figures['request'] * 1e6:.1f} | {figures['refused request'] * 1e6:.1f} | "
              f"{figures['batch'] * 1e6:.0f} |")


if __name__ == "__main__":
    main()
