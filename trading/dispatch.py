"""How accepted work reaches a pair's single matcher, and how a request gets its order's state back.

The matchers backend (``trading.backends``) carries both: a Celery queue per pair and Redis lists in
production, the matcher run in this process in the embedded default. Here: waking a pair's matcher
after a commit, retrying with backoff while its drains fail, and handing each processed order's
state, from the matcher's post-commit hook, to the request waiting for it.
"""

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from django.db import connections

from trading.backends import bus, matchers
from trading.matcher import PairMatcher
from trading.signals import batch_committed

logger = logging.getLogger(__name__)

# How long a create or cancel request waits for the matcher before answering with the state it has.
REPLY_WAIT_SECONDS = 1.0
RETRY_SECONDS = 5.0  # after a wake-up or an in-process drain failed, doubling while it keeps failing
RETRY_MAX_SECONDS = 60.0

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
    """Drain the pair's queue in this process (the Celery task body, or the in-process path)."""
    with _pair_locks[pair]:
        matchers().draining(pair)
        return len(matcher_for(pair).drain())


def wake_matcher(pair: str) -> None:
    """Have the pair's matcher drain its queue now, whatever retry of a failed drain is pending. Runs
    after the commit of accepted work, so it never raises: the work is committed and queued, and a
    failed wake-up is retried (retry_later)."""
    try:
        matchers().wake(pair, run_matcher)
    except Exception:
        # The commands stay queued; a failed batch changed nothing.
        logger.exception("could not run or wake the matcher of %s", pair)
        retry_later(pair)
    else:
        _failures.pop(pair, None)


def retry_delay(failures: int) -> float:
    """RETRY_SECONDS, doubling with each failure in a row up to RETRY_MAX_SECONDS."""
    return min(RETRY_SECONDS * 2 ** max(failures - 1, 0), RETRY_MAX_SECONDS)


_failures: dict[str, int] = {}  # pair -> wake-ups or drains failed in a row in this process
# pair -> its one pending retry: the Celery task that will run again (its id), or None for a timer here
_retry_pending: dict[str, str | None] = {}
_retry_lock = threading.Lock()
_retry_timers: set[threading.Timer] = set()  # started here and not ended (reset stops them)


def retry_later(pair: str) -> None:
    """One pending retry per pair, backing off while it keeps failing (a fault that a retry cannot
    mend must not turn into a storm of book rebuilds)."""
    with _retry_lock:
        _failures[pair] = _failures.get(pair, 0) + 1
        if pair in _retry_pending:
            return
        _retry_pending[pair] = None
        delay = retry_delay(_failures[pair])
    logger.warning("waking the matcher of %s again in %.0f s", pair, delay)
    timer = threading.Timer(delay, wake_in_thread, args=[pair])
    timer.daemon = True
    with _retry_lock:  # listed before it can end (wake_in_thread)
        _retry_timers.add(timer)
        timer.start()


def wake_in_thread(pair: str) -> None:
    with _retry_lock:
        _retry_pending.pop(pair, None)
    try:
        wake_matcher(pair)
    finally:
        connections.close_all()  # this thread's own connections; it ends here
        with _retry_lock:
            _retry_timers.discard(threading.current_thread())


def drain_failed(pair: str, task_id: str) -> float | None:
    """In a Celery matcher: the delay before this task runs again as the pair's one pending retry, or
    None when another task already is that retry (it will drain what this one could not)."""
    with _retry_lock:
        _failures[pair] = _failures.get(pair, 0) + 1
        if _retry_pending.setdefault(pair, task_id) != task_id:
            return None
        return retry_delay(_failures[pair])


def retry_not_queued(pair: str, task_id: str) -> None:
    """This task was to be the pair's pending retry but could not be queued: a timer in this process
    takes its place, so the pair is not left waiting for a retry that never comes."""
    with _retry_lock:
        if _retry_pending.get(pair) == task_id:
            del _retry_pending[pair]
    retry_later(pair)


def drain_succeeded(pair: str, task_id: str) -> None:
    """The database is back: the next failure backs off from the start. A pending retry stays
    pending (one drain of an empty queue) unless this task was it."""
    with _retry_lock:
        _failures.pop(pair, None)
        if _retry_pending.get(pair) == task_id:
            del _retry_pending[pair]


def reply_to_requests(sender, result, **kwargs) -> None:
    """The matcher's post-commit hook: each processed order's state to the request waiting for it, off
    the matcher's thread where the bus has a publisher thread."""
    bus().publish_in_order(matchers().reply, result.states)


batch_committed.connect(reply_to_requests, dispatch_uid="trading.dispatch.reply_to_requests")


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
