"""OpenAPI pieces shared by every endpoint: the error body and the list of error codes."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from exchange.errors import ErrorCode

ERROR_CODE_CHOICES = [(code.value, code.value) for code in ErrorCode]


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=ERROR_CODE_CHOICES, help_text="Stable, UPPER_SNAKE error code.")
    message = serializers.CharField(help_text="For people; may change.")
    details = serializers.DictField(help_text="Field errors and context, for programs.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def error_responses(*codes: ErrorCode) -> dict[int, OpenApiResponse]:
    """Responses for extend_schema: one entry per status, naming the codes an endpoint may return."""
    by_status: dict[int, list[str]] = {}
    every = (ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_PARAMETER, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL_ERROR)
    for code in (*every, *codes):
        by_status.setdefault(code.status, []).append(code.value)
    return {
        status: OpenApiResponse(response=ErrorSerializer, description="Error codes: " + ", ".join(sorted(set(names))))
        for status, names in by_status.items()
    }


def describe_error_codes(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """Postprocessing hook: the ErrorCode enum lists each code's HTTP status."""
    enum = result.get("components", {}).get("schemas", {}).get("ErrorCode")
    if enum is not None:
        enum["description"] = "Stable error codes and their HTTP statuses:\n\n" + "\n".join(
            f"* `{code.value}` - {code.status}" for code in ErrorCode
        )
    return result
