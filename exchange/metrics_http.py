"""``GET /metrics`` for operators, and the metrics of every HTTP request (exchange/metrics.py).

/metrics is answered only with ``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant time); anything
else is 401. Without ``METRICS_TOKEN`` there is no /metrics at all (404, as for any unknown path). It is
answered before the Host check and the HTTPS redirect, as the probes are: Prometheus scrapes the process's own
address over the internal network, never through the public proxy (deploy/nginx.conf refuses it there too).
"""

import hmac
import time

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from exchange import metrics
from exchange.errors import AuthenticationFailed, ErrorCode, error_json_response

PATH = "/metrics"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def authorized(meta: dict) -> bool:
    expected = f"Bearer {settings.METRICS_TOKEN}".encode()
    return hmac.compare_digest(meta.get("HTTP_AUTHORIZATION", "").encode(), expected)


def scrape(request) -> HttpResponse:
    if not authorized(request.META):
        response = error_json_response(AuthenticationFailed(
            ErrorCode.AUTHENTICATION_REQUIRED, "/metrics needs the operator's token: Authorization: Bearer <token>."))
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """After RequestIdMiddleware and the probes: serves /metrics, and counts and times every other request by
    its URL's name (bounded, unlike paths: order-detail, not /v1/orders/12), method, status and error code."""

    def __init__(self, get_response):
        self.get_response = get_response
        # (endpoint, method, status, code) -> the children to record into, labels bound once.
        self.children: dict[tuple, tuple] = {}

    def __call__(self, request):
        if request.path_info == PATH and settings.METRICS_TOKEN:
            return scrape(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self.record(request, response, time.perf_counter() - started)
        return response

    def record(self, request, response, seconds: float) -> None:
        match = request.resolver_match
        key = (match.view_name if match is not None else UNMATCHED, request.method if request.method in METHODS else "OTHER",
               response.status_code, getattr(response, "error_code", None) or "")
        children = self.children.get(key)
        if children is None:
            children = self.children[key] = self.bind(*key)
        count, duration, refusal = children
        count.inc()
        duration.observe(seconds)
        if refusal is not None:
            refusal.inc()

    @staticmethod
    def bind(endpoint: str, method: str, status: int, code: str) -> tuple:
        return (metrics.HTTP_REQUESTS.labels(endpoint, method, str(status), code),
                metrics.HTTP_REQUEST_DURATION.labels(endpoint, method),
                metrics.AUTH_REFUSALS.labels(code, "rest") if code in metrics.AUTH_CODES else None)
