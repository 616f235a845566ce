"""What a public GET with a query string costs the web process, in process, and its query check alone.

Run from the repository root, on the code to measure (another checkout for the code before):

    .venv/bin/python benchmarks/query_bench.py           # 3,000 timed requests per endpoint
    .venv/bin/python benchmarks/query_bench.py -n 1000

Django's WSGI handler is called directly with a prepared environ (as benchmarks/auth_bench.py does), on
the embedded default (an SQLite file in a temporary directory, the demo markets, a few trades), for
``GET /v1/time`` (no query: the baseline) and the public reads bots poll with a query string, interleaved
request by request so that machine noise hits each alike; then each query serializer's ``parse`` alone.
Figures are the median CPU time of this process per request (``time.process_time``), which other
processes' load hardly moves, and the median wall time. Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: F401  (puts the repository on sys.path)
from _common import machine, table
from auth_bench import make_environ

ENDPOINTS = ["/v1/time", "/v1/orderbook/BTC-USD?depth=10", "/v1/trades/BTC-USD?limit=50",
             "/v1/candles/BTC-USD?interval=1m&limit=100", "/v1/tickers"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=3_000, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=300)
    return parser.parse_args()


def environ_for(url: str) -> dict:
    path, _, query = url.partition("?")
    return {**make_environ({}), "PATH_INFO": path, "QUERY_STRING": query, "RAW_URI": url}


def main() -> None:
    args = parse_args()
    os.environ["EXCHANGE_VAR_DIR"] = tempfile.mkdtemp(prefix="query_bench-")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
    os.environ["PUBLIC_WEIGHT_PER_MINUTE"] = "1000000000"  # no request refused: the check costs the same
    import django

    django.setup()
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from accounts.services import open_account
    from marketdata.api.serializers import CandleQuerySerializer, OrderBookQuerySerializer, TradesQuerySerializer
    from trading import services
    from trading.api.serializers import FillListQuerySerializer
    from trading.demo import load_demo_markets
    from trading.ledger import adjust_balance
    from trading.models import Asset
    from trading.orders import OrderRequest

    call_command("migrate", verbosity=0, interactive=False)
    load_demo_markets()
    maker, taker = (open_account(get_user_model().objects.create(username=name)) for name in ("maker", "taker"))
    for account, symbol, amount in ((maker, "BTC", "10"), (taker, "USD", "1000000")):
        adjust_balance(account_id=account.pk, asset_id=Asset.objects.get(symbol=symbol).pk, amount=Decimal(amount),
                       reference="bench", memo="query_bench funding")
    for cents in range(6_000_000, 6_002_000, 100):  # 20 trades, and a book of 20 asks left
        price = Decimal(cents) / 100
        services.place_order(maker, OrderRequest(pair="BTC-USD", side="sell", type="limit", price=price,
                                                 size=Decimal("0.2")))
        services.place_order(taker, OrderRequest(pair="BTC-USD", side="buy", type="limit", price=price,
                                                 size=Decimal("0.1")))

    handler = WSGIHandler()
    cpu: dict[str, list[float]] = {url: [] for url in ENDPOINTS}
    wall: dict[str, list[float]] = {url: [] for url in ENDPOINTS}

    def call(url: str) -> None:
        seen = []
        cpu_start, start = time.process_time(), time.perf_counter()
        result = handler(environ_for(url), lambda status, headers, exc_info=None: seen.append(status))
        b"".join(result)
        if hasattr(result, "close"):
            result.close()
        wall[url].append(time.perf_counter() - start)
        cpu[url].append(time.process_time() - cpu_start)
        if not seen[0].startswith("200"):
            raise SystemExit(f"{url}: {seen[0]}")

    for _ in range(args.warmup):
        for url in ENDPOINTS:
            call(url)
    for url in ENDPOINTS:
        cpu[url].clear()
        wall[url].clear()
    for _ in range(args.requests):
        for url in ENDPOINTS:
            call(url)

    parses = {"OrderBookQuerySerializer (depth=10)": (OrderBookQuerySerializer, "depth=10"),
              "TradesQuerySerializer (limit=50)": (TradesQuerySerializer, "limit=50"),
              "CandleQuerySerializer (interval, limit)": (CandleQuerySerializer, "interval=1m&limit=100"),
              "FillListQuerySerializer (pair, limit, start_time)": (FillListQuerySerializer,
                                                                    "pair=BTC-USD&limit=50&start_time=5")}
    parse_cpu = {}
    for label, (query_serializer, query) in parses.items():
        request = Request(APIRequestFactory().get(f"/x?{query}"))
        for _ in range(args.warmup):
            query_serializer.parse(request)
        start = time.process_time()
        for _ in range(args.requests):
            query_serializer.parse(request)
        parse_cpu[label] = (time.process_time() - start) / args.requests

    print(f"query_bench: {machine()}, {args.requests} requests per endpoint, interleaved, embedded default")
    print(table(["request", "CPU median (us)", "wall median (us)"],
                [[url, f"{statistics.median(cpu[url]) * 1e6:.0f}", f"{statistics.median(wall[url]) * 1e6:.0f}"]
                 for url in ENDPOINTS]))
    print(table(["query check alone", "CPU per parse (us)"],
                [[label, f"{seconds * 1e6:.1f}"] for label, seconds in parse_cpu.items()]))


if __name__ == "__main__":
    main()
