"""Typed errors for the server's `{"error": {"code", "message", "details"}}` body (SPEC section 2).

One class per code, generated from CODES, so `except InsufficientFunds:` reads as the code does.
A code this table does not know yet (a newer server) is raised as a plain ApiError.
"""

from typing import Any

import httpx

# Mirrors ErrorCode in exchange/errors.py: code -> HTTP status.
CODES: dict[str, int] = {
    "INVALID_REQUEST": 400,
    "INVALID_PARAMETER": 400,
    "INSUFFICIENT_FUNDS": 400,
    "WITHDRAWAL_LIMIT_EXCEEDED": 400,
    "MISSING_AUTH_HEADERS": 401,
    "AUTHENTICATION_REQUIRED": 401,
    "INVALID_API_KEY": 401,
    "API_KEY_REVOKED": 401,
    "INVALID_SIGNATURE": 401,
    "TIMESTAMP_OUT_OF_WINDOW": 401,
    "NONCE_REUSED": 401,
    "PERMISSION_DENIED": 403,
    "INSUFFICIENT_SCOPE": 403,
    "IP_NOT_ALLOWED": 403,
    "DEPTH_REQUIRES_VERIFICATION": 403,
    "WITHDRAWAL_ADDRESS_NOT_ALLOWED": 403,
    "WITHDRAWAL_ADDRESS_NOT_YET_USABLE": 403,
    "NOT_FOUND": 404,
    "UNKNOWN_PAIR": 404,
    "ORDER_NOT_FOUND": 404,
    "SUBSCRIPTION_NOT_FOUND": 404,
    "WITHDRAWAL_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "NOT_ACCEPTABLE": 406,
    "MARKET_HALTED": 409,
    "DUPLICATE_CLIENT_ORDER_ID": 409,
    "DUPLICATE_CLIENT_TRANSFER_ID": 409,
    "DUPLICATE_CLIENT_SUBSCRIPTION_ID": 409,
    "EARN_PRODUCT_INACTIVE": 409,
    "EARN_CAPACITY_EXCEEDED": 409,
    "SUBSCRIPTION_LOCKED": 409,
    "DUPLICATE_CLIENT_WITHDRAWAL_ID": 409,
    "WITHDRAWALS_DISABLED": 409,
    "WITHDRAWAL_NOT_CANCELLABLE": 409,
    "ORDER_ALREADY_CLOSED": 409,
    "POST_ONLY_WOULD_TAKE": 409,
    "MESSAGE_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "RATE_LIMITED": 429,
    "SUBSCRIPTION_LIMIT": 429,
    "SLOW_CONSUMER": 429,
    "FAUCET_LIMIT_REACHED": 429,
    "PRIVATE_EVENTS_LOST": 503,
    "INTERNAL_ERROR": 500,
    "SERVICE_UNAVAILABLE": 503,
}


class ApiError(Exception):
    """A non-2xx response. `code` is the stable code (or HTTP_<status> when the body was not ours)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.code, self.message, self.details, self.status = code, message, details or {}, status
        self.headers = headers or {}

    @property
    def request_id(self) -> str | None:
        """The server's id for the request (its X-Request-Id), which names it in the server's logs: quote it in a
        support request."""
        return self.headers.get("x-request-id")


class RateLimited(ApiError):
    @property
    def retry_after(self) -> float | None:
        """Seconds to wait, from the Retry-After header (or details.retry_after)."""
        return parse_retry_after(self.headers.get("retry-after", self.details.get("retry_after")))


class TimestampOutOfWindow(ApiError):
    @property
    def server_time(self) -> int | None:
        """The server's clock (ms) when it refused, so that a client can correct its own."""
        value = self.details.get("server_time")
        return int(value) if value is not None else None


def class_name(code: str) -> str:
    return code.title().replace("_", "")  # INSUFFICIENT_FUNDS -> InsufficientFunds


_SPECIAL = {"RATE_LIMITED": RateLimited, "TIMESTAMP_OUT_OF_WINDOW": TimestampOutOfWindow}
ERRORS: dict[str, type[ApiError]] = {
    code: _SPECIAL.get(code) or type(class_name(code), (ApiError,), {"__doc__": f"{code} (HTTP {status}).",
                                                                      "__module__": __name__})
    for code, status in CODES.items()
}
globals().update({cls.__name__: cls for cls in ERRORS.values()})
__all__ = ["ApiError", "CODES", "ERRORS", "from_response", *(cls.__name__ for cls in ERRORS.values())]


def parse_retry_after(value: Any) -> float | None:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date, which this server never sends


def from_response(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx response; a body that is not ours (a proxy's 502 page) still raises."""
    headers = {name.lower(): value for name, value in response.headers.items()}
    try:
        error = response.json()["error"]
        code, message, details = str(error["code"]), str(error.get("message", "")), error.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = f"HTTP_{response.status_code}", response.text[:200], {}
    return ERRORS.get(code, ApiError)(code, message, details, response.status_code, headers)
