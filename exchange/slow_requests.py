"""The slowest recent requests, for operators (the admin's "slowest recent requests" page).

A middleware times each request and hands it to the store ``settings.SLOW_REQUESTS_STORE`` names
(exchange/slow_request_backends.py) only when it is slower than the floor that store last saw (the slowest
``SLOW_REQUESTS_KEEP`` of the current slice of time are kept, and a request faster than all of them is not):
most requests cost two clock reads and a comparison, and the rest one round trip. The store keeps the slowest
of each five-minute slice of the last ``SLOW_REQUESTS_WINDOW_SECONDS``; the page merges the slices.

A record holds the method, the route's pattern (``v1/orders/<pk>``, never the path with its ids nor
the query), the status, the error code, the time taken, the request id, when it ended and the account id: no
header, key, signature or body, so it holds nothing the logs may not.
"""

import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from django.utils.functional import LazyObject

from exchange.backends import chosen


@dataclass(frozen=True)
class TimedRequest:
    milliseconds: float
    method: str
    route: str | None  # None: no URL pattern matched (a 404 before any view)
    status: int
    error_code: str | None
    request_id: str | None
    at: float  # when it ended, seconds since the epoch
    account_id: int | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "TimedRequest":
        return cls(**json.loads(text))

    @property
    def ended_at(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


def store():
    """The store ``settings.SLOW_REQUESTS_STORE`` names: shared by the processes in production."""
    return chosen("SLOW_REQUESTS_STORE")


def slowest() -> list[TimedRequest]:
    """The slowest requests of the window, slowest first, from every process."""
    return store().slowest()


# A regular expression's named group, as DRF's routers write them: (?P<pk>[0-9]+), one level of nesting.
NAMED_GROUP = re.compile(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)")


def route_of(request) -> str | None:
    """The pattern the request's URL matched, its named groups as ``<pk>``: ``v1/orders/<pk>``."""
    match = request.resolver_match
    return match and NAMED_GROUP.sub(r"<\1>", match.route).removesuffix("$")


def account_id_of(request) -> int | None:
    """The account a request was served for, without a query of its own: its API key's (DRF puts the key on the
    request as ``auth``), else the signed-in user's when the request loaded the user and the account."""
    key_account = getattr(getattr(request, "auth", None), "account_id", None)
    if key_account is not None:
        return key_account
    user = request.__dict__.get("user")
    if isinstance(user, LazyObject):  # AuthenticationMiddleware's: loaded only if something asked for the user
        user = getattr(request, "_cached_user", None)
    if user is None or not user.is_authenticated:
        return None
    reverse = getattr(type(user), "account", None)  # accounts.Account.user's other side
    if reverse is None or not reverse.is_cached(user):
        return None
    account = reverse.related.get_cached_value(user)  # None: looked up, and an operator has none
    return account and account.pk


class SlowRequestsMiddleware:
    """Placed after RequestIdMiddleware, whose id it records, and the probes (never listed, as they are not logged):
    it times the rest of the stack and the view."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.monotonic()
        response = self.get_response(request)
        milliseconds = (time.monotonic() - started) * 1000
        slow, now = store(), time.time()
        if slow.is_slower(milliseconds, now):
            slow.record(TimedRequest(
                milliseconds=round(milliseconds, 3), method=request.method, route=route_of(request),
                status=response.status_code, error_code=getattr(response, "error_code", None),
                request_id=getattr(request, "request_id", None), at=now, account_id=account_id_of(request)))
        return response
