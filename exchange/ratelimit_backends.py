"""The stores of the rate limits' windows (exchange/ratelimit.py), one per stack; settings.RATE_LIMIT_WINDOWS
names the one a process uses. Both run the same algorithm: drop the entries older than the window,
admit the charge if it fits, and answer with the live entries."""

import threading
import time

from exchange.ratelimit import Decision, Prepaid, decide, window_seconds
from exchange.redis import get_redis


class InProcessWindows:
    """The embedded default: one process, so the buckets are a dict under a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.buckets: dict[str, dict[int, int]] = {}

    def charge(self, bucket: str, limit: int, cost: int) -> Decision:
        now = int(time.time())
        with self.lock:
            seconds = self.buckets.setdefault(bucket, {})
            for second in [s for s in seconds if s <= now - window_seconds()]:
                del seconds[second]
            allowed = sum(seconds.values()) + cost <= limit
            if allowed:
                seconds[now] = seconds.get(now, 0) + cost
            return decide(list(seconds.items()), now, limit, cost, allowed)

    def refund(self, prepaid: Prepaid) -> None:
        with self.lock:
            seconds = self.buckets.get(prepaid.charge.bucket, {})
            left = seconds.get(prepaid.decision.second, 0) - prepaid.charge.cost
            if left > 0:
                seconds[prepaid.decision.second] = left
            else:
                seconds.pop(prepaid.decision.second, None)

    def reset(self) -> None:
        """Forget every budget's charges (tests)."""
        with self.lock:
            self.buckets.clear()


# A Lua function, so that a signed request's admission script (accounts/key_cache.py) charges alike.
CHARGE_FUNCTION = """
local function charge(key, limit, cost, window)
  local now = tonumber(redis.call('TIME')[1])
  local fields = redis.call('HGETALL', key)
  local used, live = 0, {}
  for i = 1, #fields, 2 do
    local second, weight = tonumber(fields[i]), tonumber(fields[i + 1])
    if second <= now - window then
      redis.call('HDEL', key, fields[i])
    else
      used = used + weight
      live[#live + 1] = fields[i]
      live[#live + 1] = fields[i + 1]
    end
  end
  local allowed = 0
  if used + cost <= limit then
    allowed = 1
    redis.call('HINCRBY', key, now, cost)
    redis.call('EXPIRE', key, window + 1)
    live[#live + 1] = tostring(now)
    live[#live + 1] = tostring(cost)
  end
  return {allowed, now, live}
end
"""
CHARGE_SCRIPT = CHARGE_FUNCTION + "return charge(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))"

REFUND_SCRIPT = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2])) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
"""


def redis_key(bucket: str) -> str:
    return f"ratelimit:{bucket}"


def decision_from_script(reply, limit: int, cost: int) -> Decision:
    """The Decision from the Lua charge function's {allowed, now, live entries}."""
    allowed, now, flat = reply
    merged: dict[int, int] = {}
    for i in range(0, len(flat), 2):
        merged[int(flat[i])] = merged.get(int(flat[i]), 0) + int(flat[i + 1])
    return decide(list(merged.items()), int(now), limit, cost, bool(allowed))


class RedisWindows:
    """Production: the buckets in Redis, shared by every process, charged by one atomic script each."""

    def __init__(self):
        self.redis = get_redis()
        self.script = self.redis.register_script(CHARGE_SCRIPT)
        self.refund_script = self.redis.register_script(REFUND_SCRIPT)

    def charge(self, bucket: str, limit: int, cost: int) -> Decision:
        reply = self.script(keys=[redis_key(bucket)], args=[limit, cost, window_seconds()])
        return decision_from_script(reply, limit, cost)

    def refund(self, prepaid: Prepaid) -> None:
        self.refund_script(keys=[redis_key(prepaid.charge.bucket)],
                           args=[prepaid.decision.second, prepaid.charge.cost])

    def reset(self) -> None:
        """Forget every budget's charges (tests)."""
        names = list(self.redis.scan_iter(match=redis_key("*")))
        if names:
            self.redis.delete(*names)
