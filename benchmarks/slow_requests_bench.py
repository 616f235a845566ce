"""What keeping the slowest recent requests (exchange/slow_requests.py) costs a request, alone.

Run from the repository root, for the store of each stack:

    .venv/bin/python benchmarks/slow_requests_bench.py                                   # in memory
    REDIS_URL=redis://127.0.0.1:6379/4 .venv/bin/python benchmarks/slow_requests_bench.py  # Redis

Timed per request, with CPU time (``time.process_time``) of this process and wall time over the loop:

- ``below the floor``: SlowRequestsMiddleware around a view that answers at once, the current slice already
  holding SLOW_REQUESTS_KEEP slower requests: what nearly every request pays (two clock reads, a comparison);
- ``recorded``: the same request with the floor forgotten before each, so that every one is kept (the store's
  add: a heap push in memory, one pipelined round trip to Redis): what the slowest requests pay, at most
  SLOW_REQUESTS_KEEP per slice and process before the floor rises.

Prints figures; asserts nothing about speed.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent


def timed(loop, count: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per iteration of ``loop(count)``."""
    cpu, wall = time.process_time(), time.perf_counter()
    loop(count)
    return (time.process_time() - cpu) / count * 1e6, (time.perf_counter() - wall) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--requests", type=int, default=50_000)
    parser.add_argument("--recorded", type=int, default=5_000)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
    import django

    django.setup()
    from django.conf import settings

    from exchange import slow_requests
    from exchange.slow_requests import SlowRequestsMiddleware, TimedRequest

    store = slow_requests.store()
    store.reset()
    response = SimpleNamespace(status_code=201, error_code=None)
    middleware = SlowRequestsMiddleware(lambda request: response)
    request = SimpleNamespace(method="POST", resolver_match=SimpleNamespace(route="v1/orders"),
                              auth=SimpleNamespace(account_id=7), request_id="bench-request-id-0001")

    def below_floor(count):
        for _ in range(count):
            middleware(request)

    def recorded(count):
        for _ in range(count):
            store.floor_slice = None
            middleware(request)

    for index in range(settings.SLOW_REQUESTS_KEEP):  # a full slice of slower requests: the floor is 10 s
        store.record(TimedRequest(10_000 + index, "GET", "v1/time", 200, None, f"slow-{index}", time.time(), None))
    figures = {"below the floor": timed(below_floor, args.requests), "recorded": timed(recorded, args.recorded)}
    store.reset()
    print(f"slow_requests_bench: {type(store).__name__}, {args.requests:,} requests below the floor, "
          f"{args.recorded:,} recorded; load average {os.getloadavg()[0]:.2f}")
    print("| request | CPU µs | wall µs |")
    print("|---|---|---|")
    for name, (cpu, wall) in figures.items():
        print(f"| {name} | {cpu:.2f} | {wall:.2f} |")


if __name__ == "__main__":
    main()
