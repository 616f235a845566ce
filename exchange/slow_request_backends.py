"""The stores of the slowest recent requests (exchange/slow_requests.py), one per stack;
settings.SLOW_REQUESTS_STORE names the one a process uses.

Both cut the window into SLICES slices and keep the ``SLOW_REQUESTS_KEEP`` slowest requests of each, so that an
old slow request leaves the list when its slice is over, without a scan. A process remembers the floor of the
current slice (the fastest of those kept once it is full) as the store last answered it: a request not slower is
not sent. Another process raising the floor meanwhile only means a few requests sent that are dropped at once.
"""

import heapq
import itertools
import logging
import math
import threading
import time

import redis
from django.conf import settings

from exchange.redis import get_redis
from exchange.slow_requests import TimedRequest

logger = logging.getLogger(__name__)

SLICES = 12  # five minutes each, of the default hour


def slice_seconds() -> float:
    return settings.SLOW_REQUESTS_WINDOW_SECONDS / SLICES


def slice_of(at: float) -> int:
    return int(at // slice_seconds())


class SlicedStore:
    """What both stores share: the floor of the current slice, and the merge of the window's slices."""

    def __init__(self):
        self.floor_slice, self.floor = None, 0.0

    def is_slower(self, milliseconds: float, now: float) -> bool:
        return slice_of(now) != self.floor_slice or milliseconds > self.floor

    def record(self, timed: TimedRequest) -> None:
        number = slice_of(timed.at)
        self.floor, self.floor_slice = self.add(number, timed), number

    def slowest(self) -> list[TimedRequest]:
        """The slowest of the current slice and the SLICES - 1 before it, slowest first."""
        last = slice_of(time.time())
        kept = self.read(range(last - SLICES + 1, last + 1))
        return sorted(kept, key=lambda timed: timed.milliseconds, reverse=True)[:settings.SLOW_REQUESTS_KEEP]

    def add(self, number: int, timed: TimedRequest) -> float:
        """Keep it in its slice if it is among the slowest; the slice's floor afterwards."""
        raise NotImplementedError

    def read(self, numbers: range) -> list[TimedRequest]:
        raise NotImplementedError


class LocalSlowRequests(SlicedStore):
    """The embedded default: one process, so a min-heap per slice in a dict, under a lock."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.slices: dict[int, list[tuple[float, int, TimedRequest]]] = {}
        self.order = itertools.count()  # ties on the time taken never compare the records

    def add(self, number: int, timed: TimedRequest) -> float:
        with self.lock:
            for old in [n for n in self.slices if n <= number - SLICES]:
                del self.slices[old]
            kept = self.slices.setdefault(number, [])
            item = (timed.milliseconds, next(self.order), timed)
            if len(kept) < settings.SLOW_REQUESTS_KEEP:
                heapq.heappush(kept, item)
            else:
                heapq.heappushpop(kept, item)
            return kept[0][0] if len(kept) >= settings.SLOW_REQUESTS_KEEP else 0.0

    def read(self, numbers: range) -> list[TimedRequest]:
        with self.lock:
            return [timed for n in numbers for _, _, timed in self.slices.get(n, ())]

    def reset(self) -> None:
        """Forget every request (tests)."""
        with self.lock:
            self.slices.clear()
        self.floor_slice, self.floor = None, 0.0


def redis_key(number: int | str) -> str:
    return f"slow_requests:{number}"


# Keep the request if it is among the slice's slowest, and answer the slice's floor: one command, atomic.
ADD_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then return '0' end
return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
"""


class RedisSlowRequests(SlicedStore):
    """Production: a sorted set per slice (score: milliseconds) shared by every process, trimmed to the slowest
    and expiring with the window; a record is one script, which answers the new floor."""

    def __init__(self):
        super().__init__()
        self.redis = get_redis()
        self.add_script = self.redis.register_script(ADD_SCRIPT)

    def add(self, number: int, timed: TimedRequest) -> float:
        expiry = math.ceil(settings.SLOW_REQUESTS_WINDOW_SECONDS + slice_seconds())
        try:
            floor = self.add_script(keys=[redis_key(number)],
                                    args=[timed.to_json(), timed.milliseconds, settings.SLOW_REQUESTS_KEEP, expiry])
        except redis.RedisError as error:
            # Redis away: record nothing more this slice rather than add its timeouts to every request.
            logger.warning("slowest requests not recorded until the next slice: %s", error)
            return math.inf
        return float(floor)

    def read(self, numbers: range) -> list[TimedRequest]:
        pipe = self.redis.pipeline(transaction=False)
        for number in numbers:
            pipe.zrange(redis_key(number), 0, -1)
        return [TimedRequest.from_json(member) for members in pipe.execute() for member in members]

    def reset(self) -> None:
        """Forget every request (tests)."""
        names = list(self.redis.scan_iter(match=redis_key("*")))
        if names:
            self.redis.delete(*names)
        self.floor_slice, self.floor = None, 0.0
