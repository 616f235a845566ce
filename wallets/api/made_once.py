"""Requests a client id makes once (transfers, withdrawals, earn subscriptions): 201 with what this
request made, or 200 with what the first request with the same id made."""

from collections.abc import Callable

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.response import Response


def made_once_responses(serializer: type[serializers.Serializer], made: str, thing: str, client_id: str) -> dict:
    """The two success responses of such a request, for its OpenAPI document."""
    return {201: OpenApiResponse(serializer, description=made),
            200: OpenApiResponse(serializer, description=f"A retry: the {thing} this {client_id} made.")}


def make_once(request, account, form_class: type[serializers.Serializer], make: Callable,
              serializer: type[serializers.Serializer]) -> Response:
    """Parse the body with ``form_class``, call ``make(account, parsed)`` (which returns what it made, and
    whether this request made it) and render it with ``serializer``."""
    form = form_class(data=request.data)
    form.is_valid(raise_exception=True)
    made, created = make(account, form.validated_data)
    return Response(serializer(made).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
