"""The exchange's URLs plus a view that takes as long as it is asked to, to be found among the slowest requests."""

import time

from django.urls import include, path
from rest_framework.decorators import api_view
from rest_framework.response import Response


@api_view(["GET"])
def slow_view(request, milliseconds: int):
    time.sleep(milliseconds / 1000)
    return Response({"slept_ms": milliseconds})


urlpatterns = [
    path("v1/slow/<int:milliseconds>", slow_view),
    path("", include("exchange.urls")),
]

handler404 = "exchange.errors.not_found_view"
handler500 = "exchange.errors.server_error_view"
