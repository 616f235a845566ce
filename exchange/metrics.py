"""Every Prometheus metric of the exchange, in one place: its name, labels and help (SPEC section 11:
for operators only, served at /metrics behind a token, exchange/metrics_http.py).

The names here are the contract of the dashboards and alerts (docs/, deploy/): change them only with those.

In production every process (gunicorn workers, Daphne processes, Celery matchers and workers) writes its
values to files in ``PROMETHEUS_MULTIPROC_DIR`` (set for all of them by bin/supervise, one directory per run,
emptied at its start), and a scrape of any gunicorn worker adds them up: counters and histograms summed over
every process that ever ran in that run, a gauge by the mode it names (``livesum``: the processes alive;
``mostrecent``: the last value set, whichever process set it). Without that variable (``make run``, tests in
one process) the values live in the process's own registry.

A few values are read at scrape time rather than kept by the processes (``SCRAPED``): what the database
already knows exactly and any process may have changed (each pair's queue, the last ledger audit). The apps
that own them register the readers (``register_reader``); exchange imports no app.

Recording stays off the hot path's budget: children with their labels bound are kept (``labels()`` takes a
lock and checks its arguments each time), and a batch's many values go into a histogram at once
(``observe_many``).
"""

import bisect
import logging
import os
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from exchange.errors import ErrorCode

logger = logging.getLogger(__name__)

# Seconds, from a cached read (a millisecond) to an order create waiting on a busy matcher (a second).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)

# -- HTTP (gunicorn; Daphne's few HTTP requests too)

HTTP_REQUESTS = Counter(
    "exchange_http_requests_total",
    "HTTP requests answered, by endpoint (its URL's name, e.g. order-list, order-detail, admin:index; "
    "'unmatched' when none), method, status and error code (empty when none). Not the probes nor /metrics.",
    ["endpoint", "method", "status", "code"])
HTTP_REQUEST_DURATION = Histogram(
    "exchange_http_request_duration_seconds",
    "Time to answer an HTTP request in Django (after the request id middleware), by endpoint and method.",
    ["endpoint", "method"], buckets=LATENCY_BUCKETS)
RATE_LIMIT_REFUSALS = Counter(
    "exchange_rate_limit_refusals_total",
    "Requests refused with RATE_LIMITED, by the budget spent: 'key' (a signed request's account tier) or "
    "'address' (an unsigned or refused request's client address).",
    ["budget"])
AUTH_REFUSALS = Counter(
    "exchange_auth_refusals_total",
    "Requests refused for their credentials, by error code and transport ('rest' or 'websocket').",
    ["code", "transport"])
# The codes AUTH_REFUSALS counts: the 401s, and the 403s about the key rather than the request.
AUTH_CODES = frozenset(code.value for code in ErrorCode if code.status == 401) | {
    ErrorCode.INSUFFICIENT_SCOPE.value, ErrorCode.IP_NOT_ALLOWED.value}

# -- Matching, per pair (the matcher's process: a Celery worker, or the web process on the embedded default)

MATCHER_COMMANDS = Counter(
    "exchange_matcher_commands_total",
    "Commands (new orders and cancels) the pair's matcher has matched and committed.",
    ["pair"])
MATCHER_LAG = Histogram(
    "exchange_matcher_lag_seconds",
    "From a command's acceptance (MatcherCommand.queued_at) to its batch being matched, per command.",
    ["pair"], buckets=LAG_BUCKETS)
MATCHER_BATCH_SIZE = Histogram(
    "exchange_matcher_batch_size",
    "Commands per committed batch.",
    ["pair"], buckets=BATCH_SIZE_BUCKETS)
MATCHER_BATCH_WRITE = Histogram(
    "exchange_matcher_batch_write_seconds",
    "Time to write and commit a matched batch (its statements and the commit).",
    ["pair"], buckets=LATENCY_BUCKETS)
MATCHER_LAST_SEQUENCE = Gauge(
    "exchange_matcher_last_sequence",
    "The book sequence of the pair's last committed batch that changed the book.",
    ["pair"], multiprocess_mode="mostrecent")
TRADES = Counter(
    "exchange_trades_total",
    "Trades committed.",
    ["pair"])
MATCHER_DRAIN_FAILURES = Counter(
    "exchange_matcher_drain_failures_total",
    "Drains of the pair's queue that raised (each is logged and retried; a failed batch changed nothing).",
    ["pair"])
BOOK_DEPTH = Gauge(
    "exchange_book_depth_levels",
    "Price levels on each side of the pair's book ('bid', 'ask') after its last matched batch.",
    ["pair", "side"], multiprocess_mode="mostrecent")

# -- WebSocket (Daphne processes)

WS_CONNECTIONS = Gauge(
    "exchange_ws_connections",
    "Open WebSocket connections.",
    multiprocess_mode="livesum")
WS_CONNECTIONS_OPENED = Counter(
    "exchange_ws_connections_opened_total",
    "WebSocket connections accepted.")
WS_SUBSCRIPTIONS = Gauge(
    "exchange_ws_subscriptions",
    "Subscriptions held by open WebSocket connections, by channel (book, trades, ticker, candles, ...).",
    ["channel"], multiprocess_mode="livesum")
WS_MESSAGES_SENT = Counter(
    "exchange_ws_messages_sent_total",
    "WebSocket text messages written to clients (stream messages, replies, heartbeats, errors).")
WS_SLOW_CONSUMERS = Counter(
    "exchange_ws_slow_consumers_total",
    "WebSocket connections closed as slow consumers (SLOW_CONSUMER).")
WS_RELAY_LATENCY = Histogram(
    "exchange_ws_relay_latency_seconds",
    "From a public stream message leaving the publisher (after its batch committed) to this process's relay "
    "handing it to its connections.",
    buckets=LATENCY_BUCKETS)

# -- Celery

CELERY_TASK_FAILURES = Counter(
    "exchange_celery_task_failures_total",
    "Celery task runs that raised (a retry is counted as a retry, not a failure).",
    ["task"])
CELERY_TASK_RETRIES = Counter(
    "exchange_celery_task_retries_total",
    "Celery task retries scheduled.",
    ["task"])

# -- Read at scrape time (register_reader): name -> (help, labels)

SCRAPED = {
    "exchange_matcher_queue_depth": (
        "Commands accepted and not yet matched, per pair (read from the database at scrape).", ["pair"]),
    "exchange_matcher_oldest_command_age_seconds": (
        ("Age of the pair's oldest queued command, 0 when none or the market is halted (read at scrape; "
         "/readyz's lag)."), ["pair"]),
    "exchange_ledger_audit_problems": (
        "Problems the last ledger audit found (0: the books balance).", []),
    "exchange_ledger_audit_last_run_timestamp_seconds": (
        "When the last ledger audit started, seconds since the epoch.", []),
    "exchange_ledger_audit_duration_seconds": (
        "How long the last ledger audit took.", []),
    "exchange_scraped_reads_failed": (
        "Readers of these scraped metrics that failed at this scrape (the database away): theirs are missing.", []),
}
SCRAPE_FAILURES = "exchange_scraped_reads_failed"

Reader = Callable[[], Iterable[tuple[str, tuple[str, ...], float]]]
_readers: list[Reader] = []


def register_reader(reader: Reader) -> None:
    """``reader()`` yields (name, label values, value) of SCRAPED metrics at each scrape."""
    _readers.append(reader)


class ScrapedValues:
    def collect(self):
        """A reader that fails (the database away) leaves out its metrics only: the process's own counters
        are what an operator needs most during such an outage."""
        families = {name: GaugeMetricFamily(name, help_, labels=labels) for name, (help_, labels) in SCRAPED.items()}
        failed = 0
        for reader in _readers:
            try:
                samples = list(reader())
            except Exception:
                logger.warning("the scraped metrics of %s could not be read", reader.__name__, exc_info=True)
                failed += 1
                continue
            for name, labels, value in samples:
                families[name].add_metric(list(labels), value)
        families[SCRAPE_FAILURES].add_metric([], failed)
        return families.values()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def forget_dead_processes(path: str) -> None:
    """The live gauges of the processes that are gone (a Daphne process or a matcher killed and restarted by
    supervisord, which tells no one): the directory is this host's, so their pids say whether they run."""
    for name in os.listdir(path):
        if name.startswith("gauge_live"):
            pid = int(name.removesuffix(".db").rsplit("_", 1)[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                multiprocess.mark_process_dead(pid, path)
            except PermissionError:
                pass  # alive, another user's


def exposition() -> bytes:
    """The text a scrape returns: every process's values (or this one's) and the values read now."""
    registry = CollectorRegistry()
    if path := multiprocess_dir():
        forget_dead_processes(path)
        multiprocess.MultiProcessCollector(registry, path)
    else:
        registry.register(REGISTRY)
    registry.register(ScrapedValues())
    return generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """A process that exited no longer counts in the ``live*`` gauges (gunicorn's child_exit)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


def observe_many(child, values: list[float]) -> None:
    """``child.observe(v)`` for each value, at the cost of one increment per bucket rather than per value."""
    if not values:
        return
    values = sorted(values)
    taken = 0
    for i, bound in enumerate(child._upper_bounds):
        upto = bisect.bisect_right(values, bound) if bound != float("inf") else len(values)
        if upto > taken:
            child._buckets[i].inc(upto - taken)
            taken = upto
    child._sum.inc(sum(values))
