"""URLs with views that fail on purpose, to prove no error ever leaks a stack trace."""

from django.urls import include, path
from rest_framework.decorators import api_view


@api_view(["GET"])
def broken_api_view(request):
    raise RuntimeError("secret-database-password in a stack trace")


def broken_django_view(request):
    raise RuntimeError("secret-database-password in a stack trace")


urlpatterns = [
    path("v1/broken-api", broken_api_view),
    path("v1/broken-django", broken_django_view),
    path("", include("exchange.urls")),
]

handler404 = "exchange.errors.not_found_view"
handler500 = "exchange.errors.server_error_view"
