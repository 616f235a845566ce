"""How accepted work reaches a pair's single matcher, and how a request learns it was processed.

``celery`` (production): each pair has its own queue ``match.<PAIR>`` consumed by exactly one worker
process with concurrency 1. A wake-up is queued only when none is already waiting (a Redis flag),
so a burst of orders costs one task, and the worker drains the pair's whole queue in batches.
A request waits for its order on a Redis list that the matcher pushes to after its commit.

``inprocess`` (embedded default): the matcher runs right after the accepting transaction commits,
in the same process, under a per-pair lock, so the response already carries the matching result.
"""

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.db import connections

from exchange.redis import get_redis

logger = logging.getLogger(__name__)

# How long a create or cancel request waits for the matcher before answering with the state it has.
REPLY_WAIT_SECONDS = 1.0
RETRY_SECONDS = 5.0  # after a wake-up or an in-process drain failed, doubling while it keeps failing
RETRY_MAX_SECONDS = 60.0
WAKE_FLAG_SECONDS = 30
PROCESSED_KEY_SECONDS = 30
PROCESSED_KEY_PREFIX = "order-processed:"

_matchers: dict = {}
_pair_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


def queue_name(pair: str) -> str:
    return f"match.{pair}"


def wake_flag(pair: str) -> str:
    return f"matcher-wake:{pair}"


def processed_key(order_id: int) -> str:
    return f"{PROCESSED_KEY_PREFIX}{order_id}"


def matcher_for(pair: str):
    from trading.matching import PairMatcher

    if pair not in _matchers:
        _matchers[pair] = PairMatcher(pair)
    return _matchers[pair]


def run_matcher(pair: str) -> int:
    """Drain the pair's queue in this process (the Celery task body, or the in-process path)."""
    with _pair_locks[pair]:
        if settings.MATCHER_MODE == "celery":
            cache.delete(wake_flag(pair))  # before draining: work queued from now on wakes us again
        return len(matcher_for(pair).drain())


def wake_matcher(pair: str) -> None:
    """Have the pair's matcher drain its queue now, whatever retry of a failed drain is pending. Runs
    after the commit of accepted work, so it never raises: the work is committed and queued, and a
    failed wake-up is retried (retry_later)."""
    try:
        if settings.MATCHER_MODE != "celery":
            run_matcher(pair)
        elif cache.add(wake_flag(pair), 1, timeout=WAKE_FLAG_SECONDS):
            queue_wake_up(pair)
    except Exception:
        # The commands stay queued; a failed batch changed nothing.
        logger.exception("could not run or wake the matcher of %s", pair)
        retry_later(pair)
    else:
        _failures.pop(pair, None)


def queue_wake_up(pair: str) -> None:
    from trading.tasks import match_pair

    try:
        match_pair.apply_async(args=[pair], queue=queue_name(pair))
    except Exception:
        cache.delete(wake_flag(pair))  # else the flag would stop every wake-up until it expires
        raise


def retry_delay(failures: int) -> float:
    """RETRY_SECONDS, doubling with each failure in a row up to RETRY_MAX_SECONDS."""
    return min(RETRY_SECONDS * 2 ** max(failures - 1, 0), RETRY_MAX_SECONDS)


_failures: dict[str, int] = {}  # pair -> wake-ups or drains failed in a row in this process
# pair -> its one pending retry: the Celery task that will run again (its id), or None for a timer here
_retry_pending: dict[str, str | None] = {}
_retry_lock = threading.Lock()


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
    timer.start()


def wake_in_thread(pair: str) -> None:
    with _retry_lock:
        _retry_pending.pop(pair, None)
    try:
        wake_matcher(pair)
    finally:
        connections.close_all()  # this thread's own connections; it ends here


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


# One round trip for a whole batch: a pipeline of RPUSH and EXPIRE per order cost the matcher more
# Python time than committing the batch's trades, and so did passing thousands of keys: the script
# gets the ids as one string and makes each key itself (processed_key). Keys a script makes itself are
# fine on one Redis server; Redis Cluster would want each declared.
ANNOUNCE_SCRIPT = """
for id in string.gmatch(ARGV[2], '%d+') do
    local key = ARGV[1] .. id
    redis.call('RPUSH', key, 1)
    redis.call('EXPIRE', key, ARGV[3])
end
"""


@functools.cache
def announce_script():
    return get_redis().register_script(ANNOUNCE_SCRIPT)


def announce_processed(order_ids: list[int]) -> None:
    if settings.MATCHER_MODE != "celery" or not order_ids:
        return
    announce_script()(args=[PROCESSED_KEY_PREFIX, ",".join(map(str, order_ids)), PROCESSED_KEY_SECONDS])


def wait_processed(order_id: int, timeout: float = REPLY_WAIT_SECONDS, until: Callable[[], bool] | None = None) -> bool:
    """Wait until the matcher has committed this order's latest command; False after ``timeout``.

    The matcher announces each command it processed for the order. An announcement can be left over
    from an earlier command whose wait gave up (a create that answered pending): with ``until``, an
    announcement counts only once ``until()`` is true, and the wait goes on until the timeout."""
    if settings.MATCHER_MODE != "celery":
        return True  # the in-process matcher ran before the accepting request got here
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if get_redis().blpop([processed_key(order_id)], timeout=remaining) is None:
            return False
        if until is None or until():
            return True
    return False
