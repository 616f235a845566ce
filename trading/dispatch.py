"""How accepted work reaches a pair's single matcher, and how a request gets its order's state back.

The matchers backend (``trading.backends``) carries both: a long-lived loop per pair in its Celery
worker and Redis lists in production, the matcher run in this process in the embedded default. Here:
waking a pair's matcher after a commit, the loops (``MatcherLoops``), retrying with backoff while drains
fail, and a request waiting for its order's state, which the matcher hands over (``matchers().reply``) in
its batch's one round trip of publishing (``marketdata.publishing.send_batch``).
"""

import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from django.db import connections
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from exchange import metrics
from trading.backends import CompiledRead, matchers, store
from trading.matcher import PairMatcher
from trading.models import Market, MatcherCommand

logger = logging.getLogger(__name__)

# How long a create or cancel request waits for the matcher before answering with the state it has.
REPLY_WAIT_SECONDS = 1.0
RETRY_SECONDS = 5.0  # after a wake-up or an in-process drain failed, doubling while it keeps failing
RETRY_MAX_SECONDS = 60.0
# A matcher loop looks at its queue this often when no wake-up comes: a lost wake-up (a web process
# killed between its commit and the wake-up, Redis restarting) delays its commands by this at most.
POLL_SECONDS = 5.0
# A matcher loop woken by nothing for this long closes its database connection: an idle backend is not
# free to PostgreSQL (docs/performance.md, "The matcher between batches").
IDLE_SECONDS = 60.0
# A matcher worker's long-lived objects are mostly its books, which the cyclic collector's automatic full
# passes walked again and again, finding next to nothing: a tenth of a long backlog's drain
# (docs/performance.md, "The collector in a matcher worker"). The worker makes one full pass this often instead.
FULL_COLLECTION_SECONDS = 600.0
NO_AUTOMATIC_FULL_COLLECTION = 2**31 - 1  # as the oldest generation's threshold: never reached

_matchers: dict[str, PairMatcher] = {}
_pair_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


def reset() -> None:
    """Forget this process's matchers and retries (tests: a new process). A retry timer is cancelled, or
    waited for if it is draining: a drain left to a later test would race its flush of the database (a
    deadlock) or match its orders behind its back."""
    while _retry_timers:
        with _retry_lock:
            timers = list(_retry_timers)
            _retry_timers.clear()
        for timer in timers:  # one draining may start another, found by the next turn
            timer.cancel()
            timer.join()
    _matchers.clear()
    _failures.clear()
    _retry_pending.clear()


def matcher_for(pair: str) -> PairMatcher:
    if pair not in _matchers:
        _matchers[pair] = PairMatcher(pair)
    return _matchers[pair]


def run_matcher(pair: str) -> int:
    """Drain the pair's queue in this process (a matcher loop's drain, or the in-process path)."""
    with _pair_locks[pair]:
        try:
            return len(matcher_for(pair).drain())
        except Exception:
            metrics.MATCHER_DRAIN_FAILURES.labels(pair).inc()
            raise


def without_automatic_full_collections() -> tuple[int, int, int]:
    """The collector as a process serving matchers runs it: the young generations collected as by default,
    the whole heap only when the process asks (MatcherLoops, every FULL_COLLECTION_SECONDS). Returns the
    thresholds before, for gc.set_threshold."""
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], NO_AUTOMATIC_FULL_COLLECTION)
    return before


def wake_matcher(pair: str) -> None:
    """Have the pair's matcher drain its queue now, whatever retry of a failed drain is pending. Runs
    after the commit of accepted work, so it never raises: the work is committed and queued, and a
    failed wake-up is retried (retry_later)."""
    try:
        matchers().wake(pair, run_matcher)
    except Exception:
        wake_failed(pair)
    else:
        woke(pair)


def wake_and_wait_for_state(pair: str, order_id: int, timeout: float = REPLY_WAIT_SECONDS) -> list | None:
    """wake_matcher, then wait_for_state for the order's first state (a create's, which the drain it
    wakes answers): Redis takes both in one round trip. If that fails, the wake-up is retried as
    wake_matcher's and the wait made alone (an outage raises there, as from wait_for_state)."""
    try:
        state = matchers().wake_and_wait(pair, run_matcher, order_id, timeout)
    except Exception:
        wake_failed(pair)
        return wait_for_state(order_id, timeout)
    woke(pair)
    return state


def woke(pair: str) -> None:
    """A wake-up that worked (its drain takes every queued command): the backoff starts again from
    RETRY_SECONDS, and a retry still pending, perhaps a minute off, is not needed."""
    with _retry_lock:
        _failures.pop(pair, None)
        pending = _retry_pending.pop(pair, None)
    if pending is not None:
        pending.cancel()


def wake_failed(pair: str) -> None:
    # The commands stay queued; a failed batch changed nothing.
    logger.exception("could not run or wake the matcher of %s", pair)
    retry_later(pair)


def retry_delay(failures: int) -> float:
    """RETRY_SECONDS, doubling with each failure in a row up to RETRY_MAX_SECONDS."""
    return min(RETRY_SECONDS * 2 ** max(failures - 1, 0), RETRY_MAX_SECONDS)


_failures: dict[str, int] = {}  # pair -> wake-ups or drains failed in a row in this process
_retry_pending: dict[str, threading.Timer] = {}  # pair -> its retry timer waiting in this process
_retry_lock = threading.Lock()
_retry_timers: set[threading.Timer] = set()  # started here and not ended (reset stops them)


def retry_later(pair: str) -> None:
    """One pending retry per pair, backing off while it keeps failing (a fault that a retry cannot
    mend must not turn into a storm of book rebuilds)."""
    with _retry_lock:
        _failures[pair] = _failures.get(pair, 0) + 1
        if pair in _retry_pending:
            return
        delay = retry_delay(_failures[pair])
        timer = threading.Timer(delay, wake_in_thread, args=[pair])
        timer.daemon = True
        _retry_pending[pair] = timer
        _retry_timers.add(timer)  # listed before it can end (wake_in_thread)
        timer.start()
    logger.warning("waking the matcher of %s again in %.0f s", pair, delay)


def wake_in_thread(pair: str) -> None:
    with _retry_lock:
        _retry_pending.pop(pair, None)
    try:
        wake_matcher(pair)
    finally:
        connections.close_all()  # this thread's own connections; it ends here
        with _retry_lock:
            _retry_timers.discard(threading.current_thread())


class MatcherLoops:
    """The matchers of the pairs one Celery worker serves (its queues ``match.<PAIR>``), each a long-lived
    loop on a thread of its own (``serve``), woken by one waiter thread for them all: a blocked wait on
    the pairs' wake-up lists, and every POLL_SECONDS, whatever wake-ups came meanwhile, one look for
    queued commands, so that idle pairs cost one round trip to Redis and one query per poll, whatever
    their number, and a pair whose wake-up was lost waits POLL_SECONDS at most however busy the others are.
    The poll does not wake a pair whose loop is backing off after failed drains (``backing_off``): that loop
    tries again on its own clock, or at a commit's wake-up. While they run, the process's cyclic garbage
    is collected in full by the waiter every FULL_COLLECTION_SECONDS, not by the collector's automatic
    passes (without_automatic_full_collections)."""

    def __init__(self, pairs: list[str]):
        self.pairs = pairs
        self.stopping = threading.Event()
        self.woken = {pair: threading.Event() for pair in pairs}
        self.backing_off: set[str] = set()  # pairs whose last drain failed (serve)
        self.queued_read: CompiledRead | None = None  # the poll's statement (queued_pairs)
        self.threads = [threading.Thread(target=serve, args=[pair, self.woken[pair], self.stopping, self.backing_off],
                                         name=f"matcher-{pair}") for pair in pairs]
        self.threads.append(threading.Thread(target=self.wait_for_wake_ups, name="matcher-wake-ups"))
        self.thresholds_before: tuple[int, int, int] | None = None

    def start(self) -> None:
        self.thresholds_before = without_automatic_full_collections()
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Each loop finishes the drain at hand."""
        self.stopping.set()
        for woken in self.woken.values():
            woken.set()
        wake_matcher(self.pairs[0])  # ends the waiter's wait now (or, Redis down, at its next poll)
        for thread in self.threads:
            thread.join()
        gc.set_threshold(*self.thresholds_before)

    def wait_for_wake_ups(self) -> None:
        collected_at = polled_at = time.monotonic()
        try:
            while not self.stopping.is_set():
                redis_down = False
                try:
                    pair = matchers().wait_for_wake_up(self.pairs, polled_at + POLL_SECONDS - time.monotonic())
                except Exception as error:  # Redis is restarting: poll meanwhile, every second
                    logger.warning("the matchers cannot wait for wake-ups (%r); polling", error)
                    self.stopping.wait(1.0)
                    pair, redis_down = None, True
                if pair is not None:
                    self.woken[pair].set()
                if redis_down or time.monotonic() - polled_at >= POLL_SECONDS:
                    polled_at = time.monotonic()
                    for due in self.queued_pairs():
                        if due not in self.backing_off:
                            self.woken[due].set()
                if time.monotonic() - collected_at >= FULL_COLLECTION_SECONDS:
                    gc.collect()
                    collected_at = time.monotonic()
        finally:
            connections.close_all()  # this thread's own connections; it ends here

    def queued_pairs(self) -> list[str]:
        """Those of the pairs with queued commands (all of them when the database cannot say: a drain will
        tell): one probe of the queue's (market, id) index per pair, not a scan of the queue, in a statement
        compiled once."""
        try:
            if self.queued_read is None:
                # EXISTS written out: Django's Exists() would bind its SELECT 1 as a parameter.
                queued = RawSQL(f'EXISTS (SELECT 1 FROM "{MatcherCommand._meta.db_table}" AS c '
                                f'WHERE c."market_id" = "{Market._meta.db_table}"."id")', [], output_field=BooleanField())
                self.queued_read = store().compiled(
                    Market.objects.alias(queued=queued).filter(queued=True, pair__in=self.pairs).values_list("pair"))
            return [pair for pair, in store().read(self.queued_read, self.pairs)]
        except Exception:
            connections.close_all()
            return self.pairs


def serve(pair: str, woken: threading.Event, stopping: threading.Event, backing_off: set[str]) -> None:
    """The pair's matcher as one long-lived loop, until ``stopping`` is set: drain, then wait until
    ``woken`` is set (a wake-up, or the poll found commands queued). It drains first of all: a matcher
    (re)started finishes what was queued while it was down. A failed drain (the database restarting)
    is tried again after retry_delay, or at once when a new commit wakes it; meanwhile the pair is in
    ``backing_off``, which the poll leaves alone. Two loops for one pair (workers overlapping in a
    deploy) are safe: each batch locks the pair's BookState and follows the last one committed
    (``trading.matcher``)."""
    failures, due = 0, True
    try:
        while not stopping.is_set():
            if due:
                woken.clear()  # a wake-up from now on drains again, after this drain
                try:
                    run_matcher(pair)
                    failures = 0
                    backing_off.discard(pair)
                except Exception:
                    failures += 1
                    backing_off.add(pair)
                    logger.exception("the matcher of %s failed; draining again in %.0f s or at the next wake-up",
                                     pair, retry_delay(failures))
                    connections.close_all()  # the next try opens a fresh connection
            due = woken.wait(retry_delay(failures) if failures else IDLE_SECONDS) or failures > 0
            if not due:
                connections.close_all()  # idle: opened again by the next drain
    finally:
        connections.close_all()  # this thread's own connections; it ends here


def wait_for_state(order_id: int, timeout: float = REPLY_WAIT_SECONDS,
                   done: Callable[[list], bool] | None = None) -> list | None:
    """The order's state (Order's WRITTEN_ORDER_FIELDS, as values or text) once its matcher processed
    its latest command, [] if that changed nothing; None after ``timeout``. A state can be left over
    from an earlier command whose wait gave up (a create that answered pending): with ``done``, only
    a state it accepts ends the wait."""
    deadline = time.monotonic() + timeout
    while (state := matchers().wait(order_id, deadline - time.monotonic())) is not None:
        if done is None or not state or done(state):
            return state
        if time.monotonic() >= deadline:
            break
    return None


def latest_states(order_ids: list[int]) -> dict[int, list]:
    """The last state handed over for each of the orders, where there is one."""
    return matchers().latest(order_ids) if order_ids else {}
