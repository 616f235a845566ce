"""Weighted rate limits over a sliding minute, shared by every server process.

Each budget is a bucket of (second, weight) entries covering the last 60 seconds. A request is
allowed when the weight still in the window plus its own fits the budget. In production the check
and the charge are one atomic Lua script in Redis (whose clock all processes share); in the
embedded default the same algorithm runs in-process under a lock.

Signed requests spend their key's account tier budget; everything else spends its client
address's budget (PUBLIC_WEIGHT_PER_MINUTE).
"""

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from exchange.net import client_address
from exchange.redis import get_redis


def window_seconds() -> int:
    return settings.RATE_LIMIT_WINDOW_SECONDS


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the budget is whole again
    retry_after: int  # when refused: seconds until this request's weight would fit


def decide(entries: list[tuple[int, int]], now: int, limit: int, cost: int, allowed: bool) -> Decision:
    """Headers from the live entries (after the charge, if it was allowed)."""
    window = window_seconds()
    used = sum(weight for _, weight in entries)
    reset = max((second + window - now for second, _ in entries), default=0)
    retry_after = 0
    if not allowed:
        retry_after = window
        excess, freed = used + cost - limit, 0
        if cost <= limit:
            for second, weight in sorted(entries):
                freed += weight
                if freed >= excess:
                    retry_after = second + window - now
                    break
    return Decision(allowed, limit, max(0, limit - used), reset, retry_after)


class InProcessWindows:
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

    def reset(self) -> None:
        with self.lock:
            self.buckets.clear()


CHARGE_SCRIPT = """
local key, limit, cost, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
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
"""


class RedisWindows:
    def __init__(self):
        self.script = get_redis().register_script(CHARGE_SCRIPT)

    def charge(self, bucket: str, limit: int, cost: int) -> Decision:
        allowed, now, flat = self.script(keys=[f"ratelimit:{bucket}"], args=[limit, cost, window_seconds()])
        merged: dict[int, int] = {}
        for i in range(0, len(flat), 2):
            merged[int(flat[i])] = merged.get(int(flat[i]), 0) + int(flat[i + 1])
        return decide(list(merged.items()), int(now), limit, cost, bool(allowed))


_windows = None


def windows():
    global _windows
    if _windows is None:
        _windows = RedisWindows() if settings.REDIS_URL else InProcessWindows()
    return _windows


def budget_for(request) -> tuple[str, int]:
    """(bucket, weight per minute): the key's tier when signed, else the client address."""
    from accounts.models import ApiKey

    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey):
        return f"key:{key.pk}", key.account.rate_tier.weight_per_minute
    return f"ip:{client_address(request.META)}", settings.PUBLIC_WEIGHT_PER_MINUTE


def view_weight(view, request) -> int:
    if hasattr(view, "get_rate_weight"):
        return view.get_rate_weight(request)
    weight = getattr(view, "rate_weight", 1)
    return weight.get(getattr(view, "action", None), 1) if isinstance(weight, dict) else weight


class WeightedRateThrottle(BaseThrottle):
    """DRF throttle: charges the view's weight; the decision is kept for the response headers."""

    def allow_request(self, request, view) -> bool:
        bucket, limit = budget_for(request)
        self.decision = windows().charge(bucket, limit, view_weight(view, request))
        request._request.rate_limit = self.decision
        return self.decision.allowed

    def wait(self) -> int:
        return self.decision.retry_after


class RateLimitHeadersMiddleware:
    """Every /v1/ response says where its budget stands; requests refused before the throttle ran
    (bad signature, wrong scope, unknown path) are charged weight 1 to their address."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith("/v1/"):
            return response
        decision = getattr(request, "rate_limit", None)
        if decision is None:
            decision = windows().charge(f"ip:{client_address(request.META)}", settings.PUBLIC_WEIGHT_PER_MINUTE, 1)
        response["X-RateLimit-Limit"] = str(decision.limit)
        response["X-RateLimit-Remaining"] = str(decision.remaining)
        response["X-RateLimit-Reset"] = str(decision.reset_seconds)
        if not decision.allowed:
            response["Retry-After"] = str(decision.retry_after)
        return response
