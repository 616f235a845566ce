"""The one list of error codes, the exception that carries them, and the renderer of SPEC section 2.

Every error leaves the API as ``{"error": {"code", "message", "details"}}``: errors raised by our
services (``ExchangeError``), DRF's own (validation, parse, 404, 405, throttling), Django's 404/500
handlers for ``/v1/`` paths, an outage of the database, Redis or the broker (``SERVICE_UNAVAILABLE``,
503 with ``Retry-After``), and any unexpected exception, which is logged and rendered as a bare
``INTERNAL_ERROR`` with no trace.
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
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

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
    INSUFFICIENT_FUNDS = ("INSUFFICIENT_FUNDS", 400)
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
    NOT_FOUND = ("NOT_FOUND", 404)
    UNKNOWN_PAIR = ("UNKNOWN_PAIR", 404)
    ORDER_NOT_FOUND = ("ORDER_NOT_FOUND", 404)
    METHOD_NOT_ALLOWED = ("METHOD_NOT_ALLOWED", 405)
    NOT_ACCEPTABLE = ("NOT_ACCEPTABLE", 406)
    MARKET_HALTED = ("MARKET_HALTED", 409)
    DUPLICATE_CLIENT_ORDER_ID = ("DUPLICATE_CLIENT_ORDER_ID", 409)
    ORDER_ALREADY_CLOSED = ("ORDER_ALREADY_CLOSED", 409)
    POST_ONLY_WOULD_TAKE = ("POST_ONLY_WOULD_TAKE", 409)
    MESSAGE_TOO_LARGE = ("MESSAGE_TOO_LARGE", 413)
    UNSUPPORTED_MEDIA_TYPE = ("UNSUPPORTED_MEDIA_TYPE", 415)
    RATE_LIMITED = ("RATE_LIMITED", 429)
    SUBSCRIPTION_LIMIT = ("SUBSCRIPTION_LIMIT", 429)
    SLOW_CONSUMER = ("SLOW_CONSUMER", 429)
    PRIVATE_EVENTS_LOST = ("PRIVATE_EVENTS_LOST", 503)
    INTERNAL_ERROR = ("INTERNAL_ERROR", 500)
    SERVICE_UNAVAILABLE = ("SERVICE_UNAVAILABLE", 503)


class ExchangeError(drf_exceptions.APIException):
    """An error a client can act on: a code, a message for people, and details for programs.

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


def error_body(code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code.value, "message": message, "details": details or {}}}


def with_retry_after(response, error: ExchangeError):
    if "retry_after" in error.details:
        response["Retry-After"] = str(error.details["retry_after"])
    return response


def error_response(error: ExchangeError) -> Response:
    return with_retry_after(Response(error_body(error.code, error.message, error.details), status=error.status), error)


def error_json_response(error: ExchangeError) -> JsonResponse:
    """The same, outside DRF (middleware, Django's handlers)."""
    return with_retry_after(JsonResponse(error_body(error.code, error.message, error.details), status=error.status),
                            error)


# A dependency that is down or unreachable, as opposed to a bug: the request may succeed when retried.
# Django wraps the driver's errors in its own, but not those raised outside its cursors.
OUTAGE_ERRORS = (
    OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
)
OUTAGE_RETRY_AFTER_SECONDS = 2


class ServiceUnavailable(ExchangeError):
    """A dependency failed: the request may succeed when retried (``Retry-After``)."""


def unavailable(message: str = "A service the exchange depends on is unavailable; retry shortly.",
                **details: Any) -> ServiceUnavailable:
    return ServiceUnavailable(ErrorCode.SERVICE_UNAVAILABLE, message,
                              {**details, "retry_after": OUTAGE_RETRY_AFTER_SECONDS})


def log_outage(where: str, exc: BaseException) -> None:
    """One line: which dependency failed and how, without the traceback every request of an outage
    would repeat."""
    logger.warning("outage in %s: %s.%s: %s", where, type(exc).__module__, type(exc).__name__,
                   str(exc).strip().splitlines()[0] if str(exc).strip() else "")


# DRF exceptions that map one-to-one onto a code; validation and parse errors are handled below.
DRF_CODES: dict[type[drf_exceptions.APIException], ErrorCode] = {
    drf_exceptions.NotAuthenticated: ErrorCode.MISSING_AUTH_HEADERS,
    drf_exceptions.AuthenticationFailed: ErrorCode.INVALID_API_KEY,
    drf_exceptions.PermissionDenied: ErrorCode.PERMISSION_DENIED,
    drf_exceptions.NotFound: ErrorCode.NOT_FOUND,
    drf_exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    drf_exceptions.NotAcceptable: ErrorCode.NOT_ACCEPTABLE,
    drf_exceptions.UnsupportedMediaType: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    drf_exceptions.Throttled: ErrorCode.RATE_LIMITED,
}


def as_exchange_error(exc: Exception) -> ExchangeError | None:
    """Translate a known exception into an ExchangeError; None for an unexpected one."""
    if isinstance(exc, ExchangeError):
        return exc
    if isinstance(exc, OUTAGE_ERRORS):
        return unavailable()
    if isinstance(exc, Http404):
        return ExchangeError(ErrorCode.NOT_FOUND, "Not found.")
    if isinstance(exc, PermissionDenied):
        return ExchangeError(ErrorCode.PERMISSION_DENIED, "Permission denied.")
    if isinstance(exc, RequestDataTooBig):
        return ExchangeError(ErrorCode.MESSAGE_TOO_LARGE, f"The body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes.")
    if isinstance(exc, DisallowedHost):
        return ExchangeError(ErrorCode.INVALID_REQUEST, "The Host header names a host this server does not serve.")
    if isinstance(exc, (SuspiciousOperation, BadRequest)):
        return ExchangeError(ErrorCode.INVALID_REQUEST, "The request is malformed or has too many parts.")
    if isinstance(exc, drf_exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return ExchangeError(ErrorCode.INVALID_REQUEST, "The request has invalid fields.", {"fields": detail})
    if isinstance(exc, drf_exceptions.ParseError):
        return ExchangeError(ErrorCode.INVALID_REQUEST, str(exc.detail))
    for exc_type, code in DRF_CODES.items():
        if isinstance(exc, exc_type):
            details = {"retry_after": exc.wait} if isinstance(exc, drf_exceptions.Throttled) else {}
            return ExchangeError(code, str(exc.detail), details)
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception a view raises becomes SPEC section 2's body."""
    view = context.get("view").__class__.__name__
    error = as_exchange_error(exc)
    if error is None:
        logger.exception("Unhandled error in %s", view, exc_info=exc)
        error = ExchangeError(ErrorCode.INTERNAL_ERROR, "Internal error; it has been logged.")
    elif isinstance(exc, OUTAGE_ERRORS):
        log_outage(view, exc)
    return error_response(error)


def not_found_view(request, exception=None):
    """Django's handler404: JSON under /v1/, the stock page elsewhere (admin, account pages)."""
    if request.path.startswith("/v1/"):
        return JsonResponse(error_body(ErrorCode.NOT_FOUND, f"No endpoint at {request.path}."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def bad_request_view(request, exception):
    """Django's handler400, for what it refuses before any view runs (a Host not in ALLOWED_HOSTS, too
    many query parameters): JSON under /v1/, the stock page elsewhere."""
    if request.path.startswith("/v1/"):
        return error_json_response(as_exchange_error(exception))
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def server_error_view(request):
    """Django's handler500, for errors raised outside DRF views (middleware, URL resolving). Django
    calls it while handling the exception, which it has logged: an outage is a 503 on every path."""
    if isinstance(sys.exception(), OUTAGE_ERRORS):
        if request.path.startswith("/v1/"):
            return error_json_response(unavailable())
        response = HttpResponse("Service unavailable; retry shortly.", status=503, content_type="text/plain")
        response["Retry-After"] = str(OUTAGE_RETRY_AFTER_SECONDS)
        return response
    if request.path.startswith("/v1/"):
        return JsonResponse(error_body(ErrorCode.INTERNAL_ERROR, "Internal error; it has been logged."), status=500)
    from django.views.defaults import server_error

    return server_error(request)
