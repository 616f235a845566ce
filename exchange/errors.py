"""The one list of error codes, the exceptions that carry them, and the renderer of SPEC section 2.

Code raises an exception per family of errors (``InvalidFields``, ``NotFound``, ``Conflict``...): each
knows its code, builds its message and details from the facts it is given, and is an ``ExchangeError``,
the one type the renderers take. Every error leaves the API as ``{"error": {"code", "message",
"details"}}``: errors raised by our services, DRF's own (validation, parse, 404, 405, throttling),
Django's 404/500 handlers for ``/v1/`` paths, an outage of the database, Redis or the broker
(``SERVICE_UNAVAILABLE``, 503 with ``Retry-After``), and any unexpected exception, which is logged
and rendered as a bare ``INTERNAL_ERROR`` with no trace.
"""

import logging
import sys
from enum import StrEnum
from typing import Any

import kombu.exceptions
import psycopg
import redis.exceptions
from django.conf import settings
from django.core.exceptions import BadRequest, DisallowedHost, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from exchange.logs import current

logger = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    """Stable error codes; each carries its HTTP status."""

    status: int

    def __new__(cls, value: str, status: int):
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        return member

    INVALID_REQUEST = ("INVALID_REQUEST", 400)
    INVALID_PARAMETER = ("INVALID_PARAMETER", 400)
    INSUFFICIENT_FUNDS = ("INSUFFICIENT_FUNDS", 400)
    WITHDRAWAL_LIMIT_EXCEEDED = ("WITHDRAWAL_LIMIT_EXCEEDED", 400)
    MISSING_AUTH_HEADERS = ("MISSING_AUTH_HEADERS", 401)
    AUTHENTICATION_REQUIRED = ("AUTHENTICATION_REQUIRED", 401)
    INVALID_API_KEY = ("INVALID_API_KEY", 401)
    API_KEY_REVOKED = ("API_KEY_REVOKED", 401)
    INVALID_SIGNATURE = ("INVALID_SIGNATURE", 401)
    TIMESTAMP_OUT_OF_WINDOW = ("TIMESTAMP_OUT_OF_WINDOW", 401)
    NONCE_REUSED = ("NONCE_REUSED", 401)
    PERMISSION_DENIED = ("PERMISSION_DENIED", 403)
    INSUFFICIENT_SCOPE = ("INSUFFICIENT_SCOPE", 403)
    IP_NOT_ALLOWED = ("IP_NOT_ALLOWED", 403)
    DEPTH_REQUIRES_VERIFICATION = ("DEPTH_REQUIRES_VERIFICATION", 403)
    WITHDRAWAL_ADDRESS_NOT_ALLOWED = ("WITHDRAWAL_ADDRESS_NOT_ALLOWED", 403)
    WITHDRAWAL_ADDRESS_NOT_YET_USABLE = ("WITHDRAWAL_ADDRESS_NOT_YET_USABLE", 403)
    NOT_FOUND = ("NOT_FOUND", 404)
    UNKNOWN_PAIR = ("UNKNOWN_PAIR", 404)
    ORDER_NOT_FOUND = ("ORDER_NOT_FOUND", 404)
    SUBSCRIPTION_NOT_FOUND = ("SUBSCRIPTION_NOT_FOUND", 404)
    WITHDRAWAL_NOT_FOUND = ("WITHDRAWAL_NOT_FOUND", 404)
    METHOD_NOT_ALLOWED = ("METHOD_NOT_ALLOWED", 405)
    NOT_ACCEPTABLE = ("NOT_ACCEPTABLE", 406)
    MARKET_HALTED = ("MARKET_HALTED", 409)
    DUPLICATE_CLIENT_ORDER_ID = ("DUPLICATE_CLIENT_ORDER_ID", 409)
    DUPLICATE_CLIENT_TRANSFER_ID = ("DUPLICATE_CLIENT_TRANSFER_ID", 409)
    DUPLICATE_CLIENT_SUBSCRIPTION_ID = ("DUPLICATE_CLIENT_SUBSCRIPTION_ID", 409)
    EARN_PRODUCT_INACTIVE = ("EARN_PRODUCT_INACTIVE", 409)
    EARN_CAPACITY_EXCEEDED = ("EARN_CAPACITY_EXCEEDED", 409)
    SUBSCRIPTION_LOCKED = ("SUBSCRIPTION_LOCKED", 409)
    DUPLICATE_CLIENT_WITHDRAWAL_ID = ("DUPLICATE_CLIENT_WITHDRAWAL_ID", 409)
    WITHDRAWALS_DISABLED = ("WITHDRAWALS_DISABLED", 409)
    WITHDRAWAL_NOT_CANCELLABLE = ("WITHDRAWAL_NOT_CANCELLABLE", 409)
    ORDER_ALREADY_CLOSED = ("ORDER_ALREADY_CLOSED", 409)
    POST_ONLY_WOULD_TAKE = ("POST_ONLY_WOULD_TAKE", 409)
    MESSAGE_TOO_LARGE = ("MESSAGE_TOO_LARGE", 413)
    UNSUPPORTED_MEDIA_TYPE = ("UNSUPPORTED_MEDIA_TYPE", 415)
    RATE_LIMITED = ("RATE_LIMITED", 429)
    SUBSCRIPTION_LIMIT = ("SUBSCRIPTION_LIMIT", 429)
    SLOW_CONSUMER = ("SLOW_CONSUMER", 429)
    FAUCET_LIMIT_REACHED = ("FAUCET_LIMIT_REACHED", 429)
    PRIVATE_EVENTS_LOST = ("PRIVATE_EVENTS_LOST", 503)
    INTERNAL_ERROR = ("INTERNAL_ERROR", 500)
    SERVICE_UNAVAILABLE = ("SERVICE_UNAVAILABLE", 503)


class ExchangeError(drf_exceptions.APIException):
    """An error a client can act on: a code, a message for people, and details for programs.

    The base of the families below, which are what code raises; the renderers take any of them.
    An APIException, so that DRF treats a failed authentication that raises it as unauthenticated.
    """

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def status(self) -> int:
        return self.code.status

    @property
    def status_code(self) -> int:
        return self.code.status


class ErrorFamily(ExchangeError):
    """Codes that share an HTTP status, raised with the one that applies: ``Conflict(ErrorCode.X, ...)``."""

    family_status: int

    def __init__(self, code: ErrorCode, message: str, **details: Any):
        if code.status != self.family_status:
            raise ValueError(f"{code} ({code.status}) is not a {type(self).__name__} code ({self.family_status})")
        super().__init__(code, message, details)


class InvalidRequest(ExchangeError):
    """400: the request cannot be taken as it is; ``details`` say what is wrong with it when that helps."""

    def __init__(self, message: str, **details: Any):
        super().__init__(ErrorCode.INVALID_REQUEST, message, details)


class InvalidFields(InvalidRequest):
    """400 naming the fields at fault: ``details`` is ``{"fields": {name: [message, ...]}}``, built only here."""

    def __init__(self, fields: dict[str, Any], message: str = "The request has invalid fields."):
        super().__init__(message, fields=fields)
        self.fields = fields


class InvalidField(InvalidFields):
    """One field at fault, its name leading the message."""

    def __init__(self, field: str, message: str):
        super().__init__({field: [message]}, f"{field}: {message}")


class InvalidParameter(ExchangeError):
    """400: a query parameter the operation does not take, given more than once or empty, or whose value
    is refused (a limit out of range, a cursor not taken from ``next``); ``details.parameter`` names it.
    The body and the path keep INVALID_REQUEST."""

    def __init__(self, parameter: str, message: str):
        super().__init__(ErrorCode.INVALID_PARAMETER, f"{parameter}: {message}", {"parameter": parameter})


class InsufficientFunds(ExchangeError):
    """400: a balance bucket would go negative. Each shortfall names asset, wallet, bucket and the
    amount missing (a decimal string); the message speaks of the first."""

    def __init__(self, shortfalls: list[dict[str, str]]):
        first = shortfalls[0]
        super().__init__(
            ErrorCode.INSUFFICIENT_FUNDS,
            f"Insufficient {first['asset']}: this needs {first['missing']} more than the {first['bucket']} balance.",
            {"shortfalls": shortfalls},
        )


class WithdrawalLimitExceeded(ExchangeError):
    """400: the withdrawal would take the account over its daily limit for the asset (any 24 hours);
    amounts as decimal strings."""

    def __init__(self, asset: str, limit: str, used: str, remaining: str):
        super().__init__(ErrorCode.WITHDRAWAL_LIMIT_EXCEEDED,
                         f"Over the daily withdrawal limit of {limit} {asset}: {remaining} {asset} left in the last "
                         "24 hours.", {"asset": asset, "limit": limit, "used": used, "remaining": remaining})


class AuthenticationFailed(ErrorFamily):
    """401: missing or malformed credentials, an unknown or revoked key, a bad signature, clock or nonce."""

    family_status = 401


class Forbidden(ErrorFamily):
    """403: the caller is known but may not do this (scope, IP allowlist, depth, permission)."""

    family_status = 403


class WithdrawalAddressNotAllowed(Forbidden):
    def __init__(self, asset: str, address: str):
        super().__init__(ErrorCode.WITHDRAWAL_ADDRESS_NOT_ALLOWED,
                         f"{address!r} is not in this account's {asset} withdrawal address book; add it on the "
                         "account pages (/account/wallets/addresses/).", asset=asset, address=address)


class WithdrawalAddressNotYetUsable(Forbidden):
    """The address is in the book but its waiting period has not passed; ``usable_from`` in ms."""

    def __init__(self, asset: str, address: str, usable_from: int):
        super().__init__(ErrorCode.WITHDRAWAL_ADDRESS_NOT_YET_USABLE,
                         f"{asset} address {address!r} was added recently and is usable from {usable_from} "
                         "(ms since the epoch).", asset=asset, address=address, usable_from=usable_from)


class NotFound(ErrorFamily):
    """404: no such endpoint, pair or order."""

    family_status = 404


class NoEndpoint(NotFound):
    """Nothing is served at this path (here, or in this environment: the faucet outside the sandbox)."""

    def __init__(self, path: str):
        super().__init__(ErrorCode.NOT_FOUND, f"No endpoint at {path}.")


class UnknownPair(NotFound):
    def __init__(self, pair: str):
        super().__init__(ErrorCode.UNKNOWN_PAIR, f"Unknown pair {pair!r}.", pair=pair)


class OrderNotFound(NotFound):
    """No such order on the caller's account, by order id or by client_order_id."""

    def __init__(self, order_id: int | None = None, *, client_order_id: str | None = None):
        super().__init__(ErrorCode.ORDER_NOT_FOUND, f"No order {order_id} on this account." if client_order_id is None
                         else f"No order with client_order_id {client_order_id!r}.")


class SubscriptionNotFound(NotFound):
    def __init__(self, subscription_id: int):
        super().__init__(ErrorCode.SUBSCRIPTION_NOT_FOUND, f"No earn subscription {subscription_id} on this account.")


class WithdrawalNotFound(NotFound):
    def __init__(self, withdrawal_id: int):
        super().__init__(ErrorCode.WITHDRAWAL_NOT_FOUND, f"No withdrawal {withdrawal_id} on this account.")


class MessageTooLarge(ExchangeError):
    """413: a request body or WebSocket message over its size limit."""

    def __init__(self, message: str):
        super().__init__(ErrorCode.MESSAGE_TOO_LARGE, message)


class Conflict(ErrorFamily):
    """409: the request is well formed, but the state of the market or order refuses it."""

    family_status = 409


class MarketHalted(Conflict):
    """The market is halted, or (``cancel_only``) accepts cancels only."""

    def __init__(self, pair: str, status: str):
        super().__init__(ErrorCode.MARKET_HALTED, f"{pair} accepts cancels only." if status == "cancel_only"
                         else f"{pair} is halted.", status=status)


class DuplicateClientOrderId(Conflict):
    def __init__(self, client_order_id: str, order_id: int):
        super().__init__(ErrorCode.DUPLICATE_CLIENT_ORDER_ID,
                         f"client_order_id {client_order_id!r} was already used for a different order.",
                         order_id=order_id)


class DuplicateClientTransferId(Conflict):
    def __init__(self, client_transfer_id: str, transfer_id: int):
        super().__init__(ErrorCode.DUPLICATE_CLIENT_TRANSFER_ID,
                         f"client_transfer_id {client_transfer_id!r} was already used for a different transfer.",
                         transfer_id=transfer_id)


class DuplicateClientSubscriptionId(Conflict):
    def __init__(self, client_subscription_id: str, subscription_id: int):
        super().__init__(ErrorCode.DUPLICATE_CLIENT_SUBSCRIPTION_ID,
                         f"client_subscription_id {client_subscription_id!r} was already used for a different "
                         "subscription.", subscription_id=subscription_id)


class EarnProductInactive(Conflict):
    def __init__(self, product_id: int):
        super().__init__(ErrorCode.EARN_PRODUCT_INACTIVE, f"Earn product {product_id} takes no new subscriptions.",
                         product_id=product_id)


class EarnCapacityExceeded(Conflict):
    """The subscription would take the product past its cap; ``remaining_capacity`` is what is left."""

    def __init__(self, product_id: int, asset: str, remaining_capacity: str):
        super().__init__(ErrorCode.EARN_CAPACITY_EXCEEDED,
                         f"Earn product {product_id} has {remaining_capacity} {asset} of capacity left.",
                         product_id=product_id, remaining_capacity=remaining_capacity)


class SubscriptionLocked(Conflict):
    """A locked product's subscription cannot be redeemed before ``unlocks_at`` (ms)."""

    def __init__(self, subscription_id: int, unlocks_at: int):
        super().__init__(ErrorCode.SUBSCRIPTION_LOCKED,
                         f"Subscription {subscription_id} is locked until {unlocks_at} (ms since the epoch).",
                         subscription_id=subscription_id, unlocks_at=unlocks_at)


class DuplicateClientWithdrawalId(Conflict):
    def __init__(self, client_withdrawal_id: str, withdrawal_id: int):
        super().__init__(ErrorCode.DUPLICATE_CLIENT_WITHDRAWAL_ID,
                         f"client_withdrawal_id {client_withdrawal_id!r} was already used for a different withdrawal.",
                         withdrawal_id=withdrawal_id)


class WithdrawalsDisabled(Conflict):
    def __init__(self, asset: str):
        super().__init__(ErrorCode.WITHDRAWALS_DISABLED, f"Withdrawals of {asset} are suspended.", asset=asset)


class WithdrawalNotCancellable(Conflict):
    def __init__(self, withdrawal_id: int, status: str):
        super().__init__(ErrorCode.WITHDRAWAL_NOT_CANCELLABLE,
                         f"Withdrawal {withdrawal_id} is {status}: only a withdrawal pending review can be cancelled.",
                         withdrawal_id=withdrawal_id, status=status)


class OrderAlreadyClosed(Conflict):
    def __init__(self, order_id: int, status: str, filled_size: str):
        super().__init__(ErrorCode.ORDER_ALREADY_CLOSED, f"Order {order_id} is already {status}.",
                         order_id=order_id, status=status, filled_size=filled_size)


class PostOnlyWouldTake(Conflict):
    def __init__(self, order_id: int, status: str):
        super().__init__(ErrorCode.POST_ONLY_WOULD_TAKE,
                         f"Order {order_id} would have taken liquidity, so it was rejected (post_only).",
                         order_id=order_id, status=status)


class RateLimited(ExchangeError):
    """429: the caller's request budget is spent; ``retry_after`` seconds until it is not."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(ErrorCode.RATE_LIMITED, message, {"retry_after": retry_after})


class SubscriptionLimit(ExchangeError):
    """429: a WebSocket connection asked for more subscriptions than it may hold."""

    def __init__(self, limit: int):
        super().__init__(ErrorCode.SUBSCRIPTION_LIMIT, f"At most {limit} subscriptions a connection.")


class SlowConsumer(ExchangeError):
    """429: a WebSocket client reads too slowly to keep up, and is disconnected."""

    def __init__(self, reason: str, **details: Any):
        super().__init__(ErrorCode.SLOW_CONSUMER, reason, details)


class FaucetLimitReached(ExchangeError):
    """429: the sandbox faucet's daily limit for this account and asset would be passed; nothing was
    credited. ``retry_after``: seconds until the limit is whole again (the next UTC midnight)."""

    def __init__(self, asset: str, limit: str, remaining: str, retry_after: int):
        super().__init__(ErrorCode.FAUCET_LIMIT_REACHED,
                         f"The faucet gives at most {limit} {asset} a day (UTC); {remaining} {asset} left today.",
                         {"asset": asset, "limit": limit, "remaining": remaining, "retry_after": retry_after})


class PrivateEventsLost(ExchangeError):
    """503 on a WebSocket: account events were lost on the way; the stream carries on."""

    def __init__(self, **details: Any):
        super().__init__(ErrorCode.PRIVATE_EVENTS_LOST, "Private events were lost on the way to this connection; "
                         "reconcile from GET /v1/orders and /v1/fills (and GET /v1/account/balances).", details)


class InternalError(ExchangeError):
    """500: a bug, logged where it was caught; the client learns nothing of it."""

    def __init__(self):
        super().__init__(ErrorCode.INTERNAL_ERROR, "Internal error; it has been logged.")


# A dependency that is down or unreachable, as opposed to a bug: the request may succeed when retried.
# Django wraps the driver's errors in its own, but not those raised outside its cursors.
OUTAGE_ERRORS = (
    OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
)
OUTAGE_RETRY_AFTER_SECONDS = 2


class ServiceUnavailable(ExchangeError):
    """503: a dependency failed, and the request may succeed when retried (``Retry-After``, unless
    ``retry_after`` is None)."""

    def __init__(self, message: str = "A service the exchange depends on is unavailable; retry shortly.", *,
                 retry_after: int | None = OUTAGE_RETRY_AFTER_SECONDS, **details: Any):
        if retry_after is not None:
            details["retry_after"] = retry_after
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message, details)


def error_body(code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """SPEC section 2's body, with the id of the request being served (exchange/request_ids.py) when there is one."""
    error = {"code": code.value, "message": message, "details": details or {}}
    request_id = current("request_id")
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def with_retry_after(response, error: ExchangeError):
    if "retry_after" in error.details:
        response["Retry-After"] = str(error.details["retry_after"])
    response.error_code = error.code.value  # for the request's log line (exchange/request_ids.py)
    return response


def error_response(error: ExchangeError) -> Response:
    return with_retry_after(Response(error_body(error.code, error.message, error.details), status=error.status), error)


def error_json_response(error: ExchangeError) -> JsonResponse:
    """The same, outside DRF (middleware, Django's handlers)."""
    return with_retry_after(JsonResponse(error_body(error.code, error.message, error.details), status=error.status),
                            error)


def log_outage(where: str, exc: BaseException) -> None:
    """One line: which dependency failed and how, without the traceback every request of an outage
    would repeat."""
    logger.warning("outage in %s: %s.%s: %s", where, type(exc).__module__, type(exc).__name__,
                   str(exc).strip().splitlines()[0] if str(exc).strip() else "")


# DRF exceptions that map one-to-one onto a code; validation, parse and throttling errors are handled below.
DRF_CODES: dict[type[drf_exceptions.APIException], ErrorCode] = {
    drf_exceptions.NotAuthenticated: ErrorCode.MISSING_AUTH_HEADERS,
    drf_exceptions.AuthenticationFailed: ErrorCode.INVALID_API_KEY,
    drf_exceptions.PermissionDenied: ErrorCode.PERMISSION_DENIED,
    drf_exceptions.NotFound: ErrorCode.NOT_FOUND,
    drf_exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    drf_exceptions.NotAcceptable: ErrorCode.NOT_ACCEPTABLE,
    drf_exceptions.UnsupportedMediaType: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def as_exchange_error(exc: Exception) -> ExchangeError | None:
    """Translate a known exception into an ExchangeError; None for an unexpected one."""
    if isinstance(exc, ExchangeError):
        return exc
    if isinstance(exc, OUTAGE_ERRORS):
        return ServiceUnavailable()
    if isinstance(exc, Http404):
        return NotFound(ErrorCode.NOT_FOUND, "Not found.")
    if isinstance(exc, PermissionDenied):
        return Forbidden(ErrorCode.PERMISSION_DENIED, "Permission denied.")
    if isinstance(exc, RequestDataTooBig):
        return MessageTooLarge(f"The body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes.")
    if isinstance(exc, DisallowedHost):
        return InvalidRequest("The Host header names a host this server does not serve.")
    if isinstance(exc, (SuspiciousOperation, BadRequest)):
        return InvalidRequest("The request is malformed or has too many parts.")
    if isinstance(exc, drf_exceptions.ValidationError):
        return InvalidFields(exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail})
    if isinstance(exc, drf_exceptions.ParseError):
        return InvalidRequest(str(exc.detail))
    if isinstance(exc, drf_exceptions.Throttled):
        return RateLimited(str(exc.detail), retry_after=exc.wait)
    for exc_type, code in DRF_CODES.items():
        if isinstance(exc, exc_type):
            return ExchangeError(code, str(exc.detail))
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception a view raises becomes SPEC section 2's body."""
    view = context.get("view").__class__.__name__
    error = as_exchange_error(exc)
    if error is None:
        logger.exception("Unhandled error in %s", view, exc_info=exc)
        error = InternalError()
    elif isinstance(exc, OUTAGE_ERRORS):
        log_outage(view, exc)
    return error_response(error)


def error_page(request, status: int, title: str, message: str, stock_view) -> HttpResponse:
    """The site's own error page (templates/error_page.html: the sandbox banner, no inline style for the
    Content-Security-Policy to refuse); Django's stock one, ``stock_view()``, should rendering it fail."""
    try:
        return render(request, "error_page.html", {"title": title, "message": message}, status=status)
    except Exception:
        logger.exception("rendering the %d page failed", status)
        return stock_view()


def not_found_view(request, exception=None):
    """Django's handler404: JSON under /v1/, the site's page elsewhere (admin, account pages)."""
    if request.path.startswith("/v1/"):
        return error_json_response(NoEndpoint(request.path))
    from django.views.defaults import page_not_found

    return error_page(request, 404, "Not found", "There is no page at this address.",
                      lambda: page_not_found(request, exception))


def bad_request_view(request, exception):
    """Django's handler400, for what it refuses before any view runs (a Host not in ALLOWED_HOSTS, too
    many query parameters): JSON under /v1/, the site's page elsewhere."""
    if request.path.startswith("/v1/"):
        return error_json_response(as_exchange_error(exception))
    from django.views.defaults import bad_request

    return error_page(request, 400, "Bad request", "The server cannot answer this request as it was sent.",
                      lambda: bad_request(request, exception))


def csrf_failure_view(request, reason=""):
    """CSRF_FAILURE_VIEW: a form sent without its token, or with one from an earlier session (a form left
    open in another tab while logging in or out)."""
    from django.views.csrf import csrf_failure

    return error_page(request, 403, "This form has expired",
                      "It was opened before you last logged in or out, or your browser refused cookies. "
                      "Go back, reload the page and send it again.", lambda: csrf_failure(request, reason))


def server_error_view(request):
    """Django's handler500, for errors raised outside DRF views (middleware, URL resolving). Django
    calls it while handling the exception, which it has logged: an outage is a 503 on every path."""
    if isinstance(sys.exception(), OUTAGE_ERRORS):
        if request.path.startswith("/v1/"):
            return error_json_response(ServiceUnavailable())
        response = HttpResponse("Service unavailable; retry shortly.", status=503, content_type="text/plain")
        response["Retry-After"] = str(OUTAGE_RETRY_AFTER_SECONDS)
        return response
    if request.path.startswith("/v1/"):
        return error_json_response(InternalError())
    from django.views.defaults import server_error

    return error_page(request, 500, "Something went wrong", "The error is logged; try again shortly.",
                      lambda: server_error(request))
