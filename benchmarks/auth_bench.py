"""What signed-request authentication plus weighted rate limiting add to a request, in process.

Run from the repository root:

    .venv/bin/python benchmarks/auth_bench.py            # 3,000 timed requests per variant and configuration
    .venv/bin/python benchmarks/auth_bench.py -n 1000

Django's WSGI handler is called directly with a prepared environ (no network, no test client), for
``GET /v1/time`` in three variants, interleaved request by request so that machine noise hits all
three alike:

- ``bare``: the view with no authentication and no throttle classes, and without
  RateLimitHeadersMiddleware: everything else of the stack (the baseline);
- ``unsigned``: the stack as shipped, no auth headers: the address's budget is charged
  (WeightedRateThrottle) and the rate-limit headers are added;
- ``signed``: the four X-Api-* headers, checked by ApiKeyAuthentication (the key from the process's
  cache, secret decryption, HMAC, then the cache's tokens, the nonce and the key's tier budget in
  one round trip), and the throttle applies that charge.

Each configuration runs in its own subprocess, since settings are read at import:

- ``postgres+redis``: the environment of the end-to-end tests' stack (tests/stack.py, no processes):
  DATABASE_URL on a fresh ``bench_auth_...`` PostgreSQL database and REDIS_URL on Redis db 3 or
  BENCH_REDIS_DB (nonces, key-cache tokens and rate limits by Lua scripts);
- ``embedded``: the embedded default (SQLite file in a temporary directory, local-memory cache,
  in-process limiter).

Budgets are raised (PUBLIC_WEIGHT_PER_MINUTE, the retail tier) so that no request is refused: the
cost of the check does not depend on the budget. Only the handler call is timed; signing the
request (client side) happens outside the timed region. Beside wall time, the median CPU time of
the worker process per request (``time.process_time``): the load of other processes hardly moves
it, though it leaves out the time PostgreSQL and Redis spend. Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import bench_stack, machine, percentile, table  # noqa: E402
from tests.processes import process_env  # noqa: E402

CONFIGS = ("postgres+redis", "embedded")
VARIANTS = ("bare", "unsigned", "signed")
BIG_BUDGET = 1_000_000_000


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=3_000, help="timed requests per variant")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    return parser.parse_args()


# -- the worker (one configuration, in its own process)


def make_environ(headers: dict[str, str]) -> dict:
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/v1/time", "QUERY_STRING": "", "RAW_URI": "/v1/time",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8001", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8001", "CONTENT_LENGTH": "",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http", "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def run_worker(config: str, n: int, warmup: int) -> dict:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.test.utils import override_settings

    from accounts.keys import create_api_key
    from accounts.models import RateTier
    from accounts.services import open_account

    call_command("migrate", verbosity=0, interactive=False)
    RateTier.objects.update(weight_per_minute=BIG_BUDGET)
    account = open_account(get_user_model().objects.create(username="auth-bench"))
    key, secret = create_api_key(account, label="auth bench", scope="read_only", ip_allowlist=[])

    from hkt_client.signing import signed_headers

    from marketdata.api.views import TimeView

    handler = WSGIHandler()
    with override_settings(MIDDLEWARE=[m for m in django.conf.settings.MIDDLEWARE
                                       if m != "exchange.ratelimit.RateLimitHeadersMiddleware"]):
        bare_handler = WSGIHandler()
    shipped = (TimeView.authentication_classes, TimeView.throttle_classes)

    statuses: dict[str, dict[int, int]] = {v: {} for v in VARIANTS}

    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}

    def call(variant: str) -> float:
        if variant == "signed":
            environ = make_environ(signed_headers(key.public_id, secret, "GET", "/v1/time"))
        else:
            environ = make_environ({})
        app = bare_handler if variant == "bare" else handler
        if variant == "bare":
            TimeView.authentication_classes, TimeView.throttle_classes = [], []
        seen = []
        cpu_start = time.process_time()  # this process's CPU only: what other processes' load barely moves
        start = time.perf_counter()
        result = app(environ, lambda status, headers, exc_info=None: seen.append(status))
        body = b"".join(result)
        if hasattr(result, "close"):
            result.close()
        elapsed = time.perf_counter() - start
        cpu[variant].append(time.process_time() - cpu_start)
        if variant == "bare":
            TimeView.authentication_classes, TimeView.throttle_classes = shipped
        code = int(seen[0].split()[0])
        statuses[variant][code] = statuses[variant].get(code, 0) + 1
        if code != 200 and statuses[variant][code] <= 2:
            print(f"{variant}: {seen[0]} {body[:200]!r}", file=sys.stderr)
        return elapsed

    for _ in range(warmup):
        for variant in VARIANTS:
            call(variant)
    for variant in VARIANTS:
        statuses[variant].clear()
        cpu[variant].clear()
    timings: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(n):
        for variant in VARIANTS:
            timings[variant].append(call(variant))

    result = {"config": config, "statuses": statuses, "variants": {}}
    for variant, values in timings.items():
        values.sort()
        result["variants"][variant] = {
            "median_ms": statistics.median(values) * 1000, "p90_ms": percentile(values, 90) * 1000,
            "p99_ms": percentile(values, 99) * 1000, "mean_ms": statistics.fmean(values) * 1000, "n": len(values),
            "cpu_median_ms": statistics.median(cpu[variant]) * 1000,
        }
    result["components"] = components(key, secret)
    result["post"] = post_orders(account, n_post=max(n // 6, 100), warmup=max(warmup // 6, 20))
    return result


def post_orders(account, n_post: int, warmup: int) -> dict:
    """Signed POST /v1/orders in process: its latency and where the web side spends it.

    With Redis (the Celery matchers) no matcher runs here: the wait is stubbed to return at once (a
    create's wake-up still sent), so this is the web worker's own cost of a create, without the wait for
    the matcher. On the embedded default the matcher runs inline in the request (on commit), as it does
    in that configuration."""
    import random
    from decimal import Decimal

    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    from accounts.authentication import ApiKeyAuthentication
    from accounts.keys import create_api_key
    from exchange.ratelimit import WeightedRateThrottle
    from hkt_client.signing import signed_headers
    from trading import dispatch, services
    from trading.api import serializers
    from trading.api.views import OrderViewSet
    from trading.demo import load_demo_markets
    from trading.ledger import adjust_balance
    from trading.models import Asset

    load_demo_markets()
    for symbol, amount in (("USD", "100000000"), ("BTC", "100000")):
        adjust_balance(account_id=account.pk, asset_id=Asset.objects.get(symbol=symbol).pk, amount=Decimal(amount),
                       reference="bench", memo="auth_bench funding")
    key, secret = create_api_key(account, label="auth bench trade", scope="trade", ip_allowlist=[])
    stubbed = settings.MATCHER_BACKEND.endswith("CeleryMatchers")
    saved_waits = dispatch.wait_for_state, dispatch.wake_and_wait_for_state
    if stubbed:
        dispatch.wait_for_state = lambda order_id, timeout=dispatch.REPLY_WAIT_SECONDS, done=None: None
        dispatch.wake_and_wait_for_state = lambda pair, order_id, timeout=dispatch.REPLY_WAIT_SECONDS: (
            dispatch.wake_matcher(pair))
    handler = WSGIHandler()
    rng = random.Random(3)
    statuses: dict[int, int] = {}

    def call() -> float:
        side = rng.choice(("buy", "sell"))
        cents = rng.randint(100_000, 1_000_000)
        price_cents = 6_000_000 - cents if side == "buy" else 6_000_000 + cents
        body = json.dumps({"pair": "BTC-USD", "side": side, "type": "limit",
                           "price": f"{price_cents // 100}.{price_cents % 100:02d}",
                           "size": f"0.{rng.randint(10_000, 200_000):08d}"}).encode()
        environ = make_environ(signed_headers(key.public_id, secret, "POST", "/v1/orders", body))
        environ.update({"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/orders", "RAW_URI": "/v1/orders",
                        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                        "wsgi.input": io.BytesIO(body)})
        seen = []
        start = time.perf_counter()
        result = handler(environ, lambda status, headers, exc_info=None: seen.append(status))
        b"".join(result)
        if hasattr(result, "close"):
            result.close()
        elapsed = time.perf_counter() - start
        code = int(seen[0].split()[0])
        statuses[code] = statuses.get(code, 0) + 1
        return elapsed

    try:
        for _ in range(warmup):
            call()
        statuses.clear()
        timings = sorted(call() for _ in range(n_post))
        timer = _common.PhaseTimer([
            (ApiKeyAuthentication, "authenticate", "ApiKeyAuthentication.authenticate"),
            (WeightedRateThrottle, "allow_request", "WeightedRateThrottle.allow_request (Redis Lua / in-process)"),
            (serializers.OrderCreateSerializer, "is_valid", "OrderCreateSerializer.is_valid"),
            (services, "place_order", "services.place_order (+ inline matcher on the embedded default)"),
            (dispatch, "wait_for_state", "dispatch.wait_for_state" + (" (stubbed)" if stubbed else "")),
            (dispatch, "wake_and_wait_for_state",
             "dispatch.wake_and_wait_for_state" + (" (wait stubbed)" if stubbed else "")),
            (services, "take_state", "services.take_state (the matcher's state on the order)"),
            (OrderViewSet, "render", "OrderViewSet.render (serialize)"),
        ], orm=False)
        phased_n = max(n_post // 2, 50)
        with timer:
            phased = sum(call() for _ in range(phased_n))
    finally:
        dispatch.wait_for_state, dispatch.wake_and_wait_for_state = saved_waits
    return {
        "median_ms": statistics.median(timings) * 1000, "p90_ms": percentile(timings, 90) * 1000,
        "p99_ms": percentile(timings, 99) * 1000, "n": len(timings), "statuses": statuses, "stubbed": stubbed,
        "phases": {"seconds": phased, "phases": timer.phases, "sql": timer.sql,
                   "title": f"POST /v1/orders, {phased_n} signed requests, {phased / phased_n * 1000:.1f} ms each"},
    }


def components(key, secret) -> dict[str, float]:
    """Median microseconds of the pieces a signed request pays for, each called alone."""
    from accounts import key_cache, keys
    from accounts.secrets import decrypt_secret
    from exchange.ratelimit import Charge, windows

    message = keys.prehash("1700000000000", "abcdefgh12345678", "GET", "/v1/time", b"")
    counter = iter(range(10**9))
    cached = key_cache.find(key.public_id)
    pieces = {
        "key cache miss: key_cache.load (tokens, then key + account + tier)": lambda: key_cache.load(key.public_id),
        "key cache hit: key_cache.find + instance()": lambda: key_cache.find(key.public_id).instance(),
        "decrypt_secret (Fernet)": lambda: decrypt_secret(key.secret_ciphertext),
        "HMAC-SHA256 of the prehash": lambda: keys.sign(secret, message),
        "tokens + nonce + key budget: key_cache.admit": lambda: key_cache.admit(
            cached, f"nonce-bench:{next(counter)}", 11, key_cache.now_ms(), Charge("bench-key", BIG_BUDGET, 1)),
        "rate limit alone (unsigned): windows().charge": lambda: windows().charge("bench", BIG_BUDGET, 1),
    }
    out = {}
    for name, function in pieces.items():
        for _ in range(100):
            function()
        samples = []
        for _ in range(1000):
            start = time.perf_counter()
            function()
            samples.append(time.perf_counter() - start)
        out[name] = statistics.median(samples) * 1e6
    return out


# -- the parent


def main() -> None:
    args = parse_args()
    if args.worker:
        result = run_worker(args.worker, args.requests, args.warmup)
        print("RESULT " + json.dumps(result))
        return

    print(f"auth_bench {date.today()}  {machine()}")
    print(f"GET /v1/time through django.core.handlers.wsgi.WSGIHandler, {args.requests:,} timed requests per variant "
          f"after {args.warmup} warm-up rounds, variants interleaved")
    started = time.perf_counter()
    sampler = _common.CpuSampler(lambda pid, comm, cmdline: (
        "this benchmark (parent and workers)" if "auth_bench.py" in cmdline else
        "postgres" if "postgres" in comm or cmdline.startswith("postgres") else
        "redis-server" if "redis-server" in cmdline or "redis-server" in comm else
        "other processes (not this benchmark)"))
    sampler.start()
    results = []
    budgets = {"PUBLIC_WEIGHT_PER_MINUTE": str(BIG_BUDGET), "DEBUG": "false"}
    for config in CONFIGS:
        with ExitStack() as cleanup:
            if config == "postgres+redis":
                stack = cleanup.enter_context(bench_stack("bench_auth", **budgets))
                cleanup.callback(stack.flush_redis)
                env = stack.env
            else:  # the embedded default: no DATABASE_URL, no REDIS_URL
                env = process_env(DATABASE_URL=None, REDIS_URL=None, MATCHER_MODE=None,
                                  DJANGO_SETTINGS_MODULE="exchange.settings", SECRET_KEY="bench-" + "s" * 60,
                                  EXCHANGE_VAR_DIR=tempfile.mkdtemp(prefix="bench-auth-"), LOG_LEVEL="WARNING",
                                  **budgets)
            var_dir = Path(env["EXCHANGE_VAR_DIR"])
            cleanup.callback(shutil.rmtree, var_dir, ignore_errors=True)
            (var_dir / "static").mkdir(exist_ok=True)  # WhiteNoise warns about a missing STATIC_ROOT otherwise
            command = [sys.executable, __file__, "--worker", config, "-n", str(args.requests),
                       "--warmup", str(args.warmup)]
            done = subprocess.run(command, cwd=_common.ROOT, env=env, capture_output=True, text=True, timeout=600)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                print(f"{config}: worker failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
                continue
            if done.stderr.strip():
                print(f"{config} worker stderr:\n{done.stderr[-2000:]}")
            results.append(json.loads(lines[-1].removeprefix("RESULT ")))

    cpu = sampler.stop()
    rows = []
    for result in results:
        v = result["variants"]
        for variant in VARIANTS:
            r = v[variant]
            added_unsigned = r["median_ms"] - v["unsigned"]["median_ms"]
            added_bare = r["median_ms"] - v["bare"]["median_ms"]
            rows.append([result["config"], variant, f"{r['median_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
                         f"{r['mean_ms']:.3f}", f"{added_bare:+.3f}",
                         f"{r['cpu_median_ms']:.3f} ({r['cpu_median_ms'] - v['bare']['cpu_median_ms']:+.3f})",
                         "-" if variant != "signed" else f"{added_unsigned:+.3f}",
                         ", ".join(f"{code}: {count}" for code, count in sorted(result["statuses"][variant].items()))])
    print()
    print(table(["config", "variant", "median ms", "p90 ms", "p99 ms", "mean ms", "median vs bare",
                 "CPU median ms (vs bare)",
                 "median vs unsigned", "statuses"], rows))
    print()
    comp_rows = []
    names = list(results[0]["components"]) if results else []
    for name in names:
        comp_rows.append([name, *(f"{result['components'][name]:.1f}" for result in results)])
    print("Pieces of a signed request, each called alone (median microseconds):")
    print(table(["piece", *(f"{result['config']} µs" for result in results)], comp_rows))
    print()
    print("Signed POST /v1/orders in process (resting limit orders, far apart):")
    post_rows = []
    for result in results:
        post = result["post"]
        note = ("web side only: the wait for the matcher stubbed, none running" if post["stubbed"]
                else "matcher runs inline (embedded default)")
        post_rows.append([result["config"], note, f"{post['median_ms']:.2f}", f"{post['p90_ms']:.2f}",
                          f"{post['p99_ms']:.2f}", f"{result['variants']['signed']['median_ms']:.2f}",
                          ", ".join(f"{c}: {k}" for c, k in sorted(post["statuses"].items()))])
    print(table(["config", "what is timed", "median ms", "p90 ms", "p99 ms", "signed GET /v1/time median ms",
                 "statuses"], post_rows))
    for result in results:
        print()
        print(f"{result['config']}:", end=" ")
        _common.print_phases(result["post"]["phases"])
    print()
    for result in results:
        v = result["variants"]
        added = v["signed"]["median_ms"] - v["bare"]["median_ms"]
        print(f"{result['config']}: signed auth + rate limit add {added:.3f} ms median over bare "
              f"({v['signed']['median_ms'] - v['unsigned']['median_ms']:.3f} ms over unsigned); aim < 1 ms: "
              f"{'met' if added < 1 else 'NOT met'}")
    _common.print_cpu_report(cpu, sampler, started,
                             "; the workers and their PostgreSQL backends are separate processes")


if __name__ == "__main__":
    main()
