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

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.http import JsonResponse
from rest_framework.throttling import BaseThrottle

from exchange import metrics
from exchange.backends import chosen
from exchange.errors import OUTAGE_ERRORS, ErrorCode, error_body, error_json_response, log_outage, ServiceUnavailable
from exchange.net import budget_address, client_address


# The heaviest request: a batch of 20 orders or cancels (trading.batch.MAX_ITEMS), one weight per item. A
# budget smaller than this would refuse such a request in every window, so no tier may have one.
MAX_REQUEST_WEIGHT = 20


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


class MessageAllowance:
    """A WebSocket connection's own messages: ``burst`` at once, then ``per_second``. In the connection's
    process (a connection lives in one), as GCRA does it: the time by which the messages taken would have
    been paced out, in integer nanoseconds, so that a client waiting the wait it is given is not refused
    again by a rounding."""

    def __init__(self, per_second: float, burst: int):
        self.interval = round(1_000_000_000 / per_second)
        self.slack = (burst - 1) * self.interval
        self.paced_until = 0

    def take(self) -> float:
        """0 when a message may be handled now (and it is counted), else the seconds until one may, rounded
        up to the millisecond."""
        now = time.monotonic_ns()
        paced_until = max(self.paced_until, now)
        early = paced_until - now - self.slack
        if early > 0:
            return math.ceil(early / 1_000_000) / 1000
        self.paced_until = paced_until + self.interval
        return 0.0


def windows():
    """The store of the budgets' windows that settings.RATE_LIMIT_WINDOWS names (exchange/ratelimit_backends.py)."""
    return chosen("RATE_LIMIT_WINDOWS")


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
        if not self.decision.allowed:
            metrics.RATE_LIMIT_REFUSALS.labels("address" if prepaid is None else "key").inc()
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
            return response if response.status_code == 503 else error_json_response(ServiceUnavailable())

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
                response.error_code = ErrorCode.RATE_LIMITED.value  # for the request's log line and metrics
                metrics.RATE_LIMIT_REFUSALS.labels("address").inc()
        response["X-RateLimit-Limit"] = str(decision.limit)
        response["X-RateLimit-Remaining"] = str(decision.remaining)
        response["X-RateLimit-Reset"] = str(decision.reset_seconds)
        if not decision.allowed:
            response["Retry-After"] = str(decision.retry_after)
        return response
