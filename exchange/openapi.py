"""OpenAPI pieces shared by every endpoint: the error bodies with each operation's codes, the headers of
every response, and the list of error codes."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from exchange.errors import ErrorCode

ERROR_CODE_CHOICES = [(code.value, code.value) for code in ErrorCode]

# What the layers every /v1/ request goes through may answer, whatever the operation: a malformed request
# or query (exchange/strictinput.py), signing headers that are sent and wrong (on public operations too:
# they are checked whenever sent), an address outside the key's allowlist, a method the path does not take,
# an Accept that is not JSON, a body over the size limit, a spent budget, a bug, an outage.
EVERY_OPERATION = (
    ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_PARAMETER, ErrorCode.MISSING_AUTH_HEADERS, ErrorCode.INVALID_API_KEY,
    ErrorCode.API_KEY_REVOKED, ErrorCode.INVALID_SIGNATURE, ErrorCode.TIMESTAMP_OUT_OF_WINDOW, ErrorCode.NONCE_REUSED,
    ErrorCode.IP_NOT_ALLOWED, ErrorCode.METHOD_NOT_ALLOWED, ErrorCode.NOT_ACCEPTABLE, ErrorCode.MESSAGE_TOO_LARGE,
    ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL_ERROR, ErrorCode.SERVICE_UNAVAILABLE,
)
# A private operation refuses a caller without an account or a browser session without its CSRF token.
PRIVATE_OPERATION = (ErrorCode.PERMISSION_DENIED,)
WITH_PATH_PARAMETERS = (ErrorCode.NOT_FOUND,)  # a value the route does not take (`/v1/orders/abc`)
WITH_BODY = (ErrorCode.UNSUPPORTED_MEDIA_TYPE,)  # a body that is not application/json

STATUS_TEXT = {
    400: "The request is malformed (`details.fields` or `details.parameter` says where) or refused as it is.",
    401: "Signing headers are missing, malformed or wrong (sent on a public operation, they are checked too).",
    403: "The key or account may not do this.",
    404: "Nothing is found under this name.",
    405: "The path does not take the method sent; `Allow` lists those it takes.",
    406: "The request's Accept header excludes application/json, the only type served.",
    409: "The request is well formed, but the state of the market, order or resource refuses it.",
    413: "The body is over the size limit.",
    415: "The body is not application/json.",
    429: "Over a limit: wait `Retry-After` seconds.",
    500: "A bug on our side; it has been logged.",
    503: "A service the exchange depends on is unavailable: retry (after `Retry-After` seconds when given).",
}


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=ERROR_CODE_CHOICES, help_text="Stable, UPPER_SNAKE error code.")
    message = serializers.CharField(help_text="For people; may change.")
    details = serializers.DictField(help_text="Field errors and context, for programs.")


def error_detail_schema(codes: set[str]) -> dict[str, Any]:
    """What an error holds, its ``code`` one of ``codes`` (a batch item's error; a response's has more)."""
    return {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "string", "enum": sorted(codes),
                     "description": "Stable, UPPER_SNAKE error code (the `ErrorCode` schema lists them all)."},
            "message": {"type": "string", "description": "For people; may change."},
            "details": {"type": "object", "additionalProperties": True,
                        "description": "Field errors and context, for programs."},
        },
    }


def error_schema(codes: set[str]) -> dict[str, Any]:
    """The error body (SPEC section 2) of one response, its ``code`` one of ``codes``, with the request's id."""
    error = error_detail_schema(codes)
    error["properties"]["request_id"] = {"type": "string", "description": "The request's id (`X-Request-Id`): "
                                                                         "quote it when asking about it."}
    error["required"].append("request_id")
    return {"type": "object", "required": ["error"], "properties": {"error": error}}


def error_responses(*codes: ErrorCode) -> dict[int, OpenApiResponse]:
    """Responses for extend_schema: one per status, with the codes an operation itself may answer (those of
    every operation are added by the AutoSchema, exchange/schema.py)."""
    by_status: dict[int, set[str]] = {}
    for code in codes:
        by_status.setdefault(code.status, set()).add(code.value)
    return {status: OpenApiResponse(response=error_schema(names), description=STATUS_TEXT[status])
            for status, names in by_status.items()}


def codes_of_every_operation(operation: dict[str, Any]) -> list[ErrorCode]:
    """The codes ``operation`` may answer whatever it does, from what it is: private (no anonymous access
    among its ``security``), with path parameters, with a body."""
    codes = list(EVERY_OPERATION)
    if {} not in operation.get("security", [{}]):
        codes += PRIVATE_OPERATION
    if any(parameter["in"] == "path" for parameter in operation.get("parameters", [])):
        codes += WITH_PATH_PARAMETERS
    if "requestBody" in operation:
        codes += WITH_BODY
    return codes


def error_codes_by_status(operation: dict[str, Any], codes: list[ErrorCode]) -> dict[int, set[str]]:
    """The codes of each error status of ``operation``: those its own error responses list, and ``codes``."""
    by_status: dict[int, set[str]] = {}
    for status, response in operation["responses"].items():
        if int(status) >= 400:
            schema = response["content"]["application/json"]["schema"]
            by_status[int(status)] = set(schema["properties"]["error"]["properties"]["code"]["enum"])
    for code in codes:
        by_status.setdefault(code.status, set()).add(code.value)
    return by_status


def camel(code: str) -> str:
    return "".join(word.capitalize() for word in code.split("_"))


def error_component_name(status: int, codes: set[str]) -> str:
    """One name per set of codes, shared by the operations that answer it: `Error403` for what every operation
    may answer with 403, `Error403InsufficientScopePermissionDenied` for that and more."""
    common = {code.value for code in EVERY_OPERATION if code.status == status}
    return f"Error{status}" + "".join(camel(code) for code in sorted(codes - common))


HEADERS = {
    "X-Request-Id": "The request's id, also in an error body as `error.request_id`.",
    "X-RateLimit-Limit": "The budget's weight per sliding window (a minute).",
    "X-RateLimit-Remaining": "The weight left in the window after this request.",
    "X-RateLimit-Reset": "Seconds until the budget is whole again.",
    "Retry-After": "Seconds to wait before trying again.",
}


def response_headers(status: int) -> dict[str, tuple[str, bool]]:
    """The headers of a /v1/ response, each with whether it is always there: every response has its id
    (exchange/request_ids.py) and says where its rate-limit budget stands (exchange/ratelimit.py), but a 503
    when the budgets cannot be read; a 429 says when to come back, and so may a 503."""
    known = status != 503
    headers = {"X-Request-Id": (HEADERS["X-Request-Id"], True)}
    headers.update({name: (HEADERS[name], known) for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining",
                                                              "X-RateLimit-Reset")})
    if status in (429, 503):
        headers["Retry-After"] = (HEADERS["Retry-After"], status == 429)
    return headers


def header_object(name: str, description: str, required: bool) -> dict[str, Any]:
    schema = {"type": "string"} if name == "X-Request-Id" else {"type": "integer", "minimum": 0}
    return {"description": description, "required": required, "schema": schema}


def describe_error_codes(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """Postprocessing hook: the ErrorCode enum, each code with its HTTP status, and the error body with any
    code (each operation's responses list its own)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorCode"] = {
        "type": "string",
        "enum": [code.value for code in ErrorCode],
        "description": "Stable error codes and their HTTP statuses:\n\n" + "\n".join(
            f"* `{code.value}` - {code.status}" for code in ErrorCode),
    }
    schemas["Error"] = error_schema({code.value for code in ErrorCode})
    schemas["Error"]["properties"]["error"]["properties"]["code"] = {"$ref": "#/components/schemas/ErrorCode"}
    result["components"]["schemas"] = dict(sorted(schemas.items()))
    return result
