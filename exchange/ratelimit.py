"""Weighted rate limits over a sliding minute, shared by every server process.

Each budget is a bucket of (second, weight) entries covering the last 60 seconds. A request is
allowed when the weight still in the window plus its own fits the budget. In production the check
and the charge are one atomic Lua script in Redis (whose clock all processes share); in the
embedded default the same algorithm runs in-process under a lock.

Signed requests spend their key's account tier budget; everything else spends its client
address's budget (PUBLIC_WEIGHT_PER_MINUTE). A signed request's charge is made with its nonce, in
one round trip, before the permission checks (accounts/authentication.py): the throttle then takes
that decision, and a request refused in between gets its charge back (RateLimitHeadersMiddleware).
"""

import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.http import JsonResponse
from rest_framework.throttling import BaseThrottle

from exchange.errors import OUTAGE_ERRORS, ErrorCode, error_body, error_json_response, log_outage, unavailable
from exchange.net import budget_address, client_address
from exchange.redis import get_redis


def window_seconds() -> int:
    return settings.RATE_LIMIT_WINDOW_SECONDS


class Charge(NamedTuple):
    """What a request spends: ``cost`` weight from ``bucket``, whose budget is ``limit`` per window."""

    bucket: str
    limit: int
    cost: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the budget is whole again
    retry_after: int  # when refused: seconds until this request's weight would fit
    second: int  # when it was decided: the entry an allowed charge went to


@dataclass(frozen=True)
class Prepaid:
    """A charge made before the throttle ran, and its decision."""

    charge: Charge
    decision: Decision


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
    return Decision(allowed, limit, max(0, limit - used), reset, retry_after, now)


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

    def refund(self, prepaid: Prepaid) -> None:
        with self.lock:
            seconds = self.buckets.get(prepaid.charge.bucket, {})
            left = seconds.get(prepaid.decision.second, 0) - prepaid.charge.cost
            if left > 0:
                seconds[prepaid.decision.second] = left
            else:
                seconds.pop(prepaid.decision.second, None)

    def reset(self) -> None:
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
    def __init__(self):
        self.script = get_redis().register_script(CHARGE_SCRIPT)
        self.refund_script = get_redis().register_script(REFUND_SCRIPT)

    def charge(self, bucket: str, limit: int, cost: int) -> Decision:
        reply = self.script(keys=[redis_key(bucket)], args=[limit, cost, window_seconds()])
        return decision_from_script(reply, limit, cost)

    def refund(self, prepaid: Prepaid) -> None:
        self.refund_script(keys=[redis_key(prepaid.charge.bucket)],
                           args=[prepaid.decision.second, prepaid.charge.cost])


_windows = None


def windows():
    global _windows
    if _windows is None:
        _windows = RedisWindows() if settings.REDIS_URL else InProcessWindows()
    return _windows


def key_budget(key) -> tuple[str, int]:
    """(bucket, weight per minute) of a signed request: its key's account tier."""
    return f"key:{key.pk}", key.account.rate_tier.weight_per_minute


def address_budget(request) -> tuple[str, int]:
    return f"ip:{budget_address(client_address(request.META))}", settings.PUBLIC_WEIGHT_PER_MINUTE


def view_weight(view, request) -> int:
    if hasattr(view, "get_rate_weight"):
        return view.get_rate_weight(request)
    weight = getattr(view, "rate_weight", 1)
    return weight.get(getattr(view, "action", None), 1) if isinstance(weight, dict) else weight


class WeightedRateThrottle(BaseThrottle):
    """DRF throttle: charges the view's weight (a signed request's was charged with its nonce); the
    decision is kept for the response headers. The last check a request passes: an allowed one runs
    the authentication's ``on_admitted`` (a signed key's last use)."""

    def allow_request(self, request, view) -> bool:
        prepaid = getattr(request._request, "prepaid_rate_limit", None)
        if prepaid is None:
            self.decision = windows().charge(*address_budget(request), view_weight(view, request))
        else:
            self.decision = prepaid.decision
        request._request.rate_limit = self.decision
        on_admitted = getattr(request._request, "on_admitted", None)
        if self.decision.allowed and on_admitted is not None:
            on_admitted()
        return self.decision.allowed

    def wait(self) -> int:
        return self.decision.retry_after


class RateLimitHeadersMiddleware:
    """Every /v1/ response says where its budget stands; requests refused before the throttle ran
    (bad signature, wrong scope, unknown path) are charged weight 1 to their address, get back what
    their key was charged with the nonce, and become 429 when their address is over its budget."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        try:
            return self.account_for(request, response)
        except OUTAGE_ERRORS as error:
            # Redis is down: no budget can be decided or charged, and the request most likely failed
            # on it too; the client is told to come back rather than served without a limit.
            log_outage("rate limits", error)
            return response if response.status_code == 503 else error_json_response(unavailable())

    def account_for(self, request, response):
        decision = getattr(request, "rate_limit", None)
        prepaid = getattr(request, "prepaid_rate_limit", None)
        if decision is None and prepaid is not None and prepaid.decision.allowed:
            windows().refund(prepaid)
        if not request.path.startswith("/v1/"):
            return response
        if decision is None:
            decision = windows().charge(*address_budget(request), 1)
            if not decision.allowed:
                # An address over its budget is told so, also when its request failed for another
                # reason: a client retrying bad signatures must learn to back off.
                response = JsonResponse(error_body(ErrorCode.RATE_LIMITED, "Too many refused requests from "
                                                   f"{client_address(request.META)}; retry later.",
                                                   {"retry_after": decision.retry_after}), status=429)
        response["X-RateLimit-Limit"] = str(decision.limit)
        response["X-RateLimit-Remaining"] = str(decision.remaining)
        response["X-RateLimit-Reset"] = str(decision.reset_seconds)
        if not decision.allowed:
            response["Retry-After"] = str(decision.retry_after)
        return response
