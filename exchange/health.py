"""``GET /healthz`` and ``GET /readyz``, for load balancers and Kubernetes probes (SPEC section 11).

``/healthz``: the process answers; it reads nothing, so a database outage does not get every process
restarted. ``/readyz``: this process can serve: each check ``settings.READINESS_CHECKS`` names (the
database, Redis when configured, each active market's matcher within its lag budget) passes; 200, or 503
with the failed checks named. Answered by a middleware placed before the host, HTTPS-redirect and query
checks: a probe comes by plain HTTP to the pod's address, which is in no ALLOWED_HOSTS. Unsigned, not
rate limited (they are outside /v1/), and cheap: one round trip per dependency.
"""

import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils.module_loading import import_string

from exchange.redis import get_redis

logger = logging.getLogger(__name__)


def database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def redis() -> None:
    get_redis().ping()


def readiness() -> tuple[bool, dict]:
    """(ready, body): each check's result, "ok" or what failed; the names of those that failed."""
    checks, failed = {}, []
    for name, path in settings.READINESS_CHECKS.items():
        try:
            problem = import_string(path)()
        except Exception as error:  # a dependency down raises: the probe reports it, it is not a bug here
            problem = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        checks[name] = "ok" if problem is None else problem
        if problem is not None:
            failed.append(name)
    if failed:
        logger.warning("not ready: %s", "; ".join(f"{name}: {checks[name]}" for name in failed))
    return not failed, {"status": "unavailable" if failed else "ready", "failed": failed, "checks": checks}


def healthz() -> JsonResponse:
    return JsonResponse({"status": "alive"})


def readyz() -> JsonResponse:
    ready, body = readiness()
    return JsonResponse(body, status=200 if ready else 503)


PROBES = {"/healthz": healthz, "/readyz": readyz}


class HealthMiddleware:
    """Serves the probes (GET or HEAD) before the middleware that would refuse a probe's Host or redirect it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = PROBES.get(request.path_info)
        if probe is None or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        return probe()
