"""Every HTTP request's id: in the ``X-Request-Id`` response header, in every error body
(``error.request_id``, exchange/errors.py) and on every log line written while it is served.

The incoming ``X-Request-Id`` is kept only from a trusted proxy (``TRUSTED_PROXIES``), which then ties
its own log to ours, and only when it is a short token of safe characters; anyone else's is replaced,
so that a client cannot forge ids into the logs. Each request served ends with one log line of its own
(logger ``exchange.requests``): method, path, status, time taken and, for an error, its code.
"""

import logging
import re
import secrets
import time

from exchange.logs import current, log_context
from exchange.net import is_trusted_proxy

logger = logging.getLogger("exchange.requests")

HEADER = "X-Request-Id"
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
# Probes ask every few seconds: one line each would bury the requests that matter.
QUIET_PATHS = frozenset({"/healthz", "/readyz"})


def new_request_id() -> str:
    """128 random bits, URL-safe (not hex: 64 hex digits look like a secret to the log's redaction)."""
    return secrets.token_urlsafe(16)


def request_id_for(meta: dict) -> str:
    sent = meta.get("HTTP_X_REQUEST_ID", "")
    if sent and SAFE_ID.fullmatch(sent) and is_trusted_proxy(meta.get("REMOTE_ADDR", "")):
        return sent
    return new_request_id()


def current_request_id() -> str | None:
    return current("request_id")


class RequestIdMiddleware:
    """First in MIDDLEWARE: the id is bound before anything else runs or logs."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_for(request.META)
        started = time.monotonic()
        with log_context(request_id=request_id):
            request.request_id = request_id
            response = self.get_response(request)
            response[HEADER] = request_id
            if request.path not in QUIET_PATHS:
                log_request(request, response, time.monotonic() - started)
        return response


def log_request(request, response, seconds: float) -> None:
    code = getattr(response, "error_code", None)
    level = logging.ERROR if response.status_code >= 500 else logging.INFO
    logger.log(level, "%s %s %s %.1f ms%s", request.method, request.path, response.status_code, seconds * 1000,
               f" {code}" if code else "")
