"""The served OpenAPI document is exact (issue 17): what it promises of each operation, checked on the document
itself. tests/test_schemathesis.py checks it against the server's answers."""

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from rest_framework.exceptions import ValidationError

from exchange.errors import ErrorCode
from exchange.fields import POSITIVE_DECIMAL_PATTERN, DecimalString
from exchange.openapi import EVERY_OPERATION

# Words of the code's inside that a description written for API users has no use for.
INTERNAL = re.compile(r"\b(ORM|serializers?|querysets?|cache[ds]?|threads?|docstrings?|select_related|Django|DRF|"
                      r"Celery|Redis|SQL|database|models?\.|\w+\.py)\b|``", re.IGNORECASE)
RATE_LIMIT_HEADERS = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


@pytest.fixture(scope="module")
def document(django_db_blocker):
    from django.test import Client

    with django_db_blocker.unblock():
        response = Client().get("/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def resolve(document, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def error_codes(document, response) -> set[str]:
    schema = resolve(document, response["content"]["application/json"]["schema"])
    return set(schema["properties"]["error"]["properties"]["code"]["enum"])


def texts(value, where=""):
    """Every description and summary in the document, with where it is."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("description", "summary") and isinstance(item, str):
                yield f"{where}/{key}", item
            else:
                yield from texts(item, f"{where}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from texts(item, f"{where}/{index}")


def test_the_document_is_valid_openapi_served_where_its_paths_are(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": "/", "description": "The server this document is served from."}]
    schemas = document["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    assert "UNKNOWN_PAIR` - 404" in schemas["ErrorCode"]["description"]


def test_each_operation_is_named_once_in_camel_case(document):
    names = [operation["operationId"] for _, operation in operations(document)]

    assert len(names) == len(set(names)) == 32
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", name) for name in names), names
    assert {"createOrder", "getOrder", "cancelOrder", "listOrders", "getOrderBook", "createOrders", "cancelOrders",
            "cancelAllOrders", "cancelAllOrdersAfter", "getBalances", "listCandles", "getTicker"} <= set(names)


def test_each_operation_has_its_weight_as_a_number(document):
    weights = {label: {key: value for key, value in operation.items() if key.startswith("x-rate-limit")}
               for label, operation in operations(document)}

    assert all(isinstance(weight["x-rate-limit-weight"], int) and weight["x-rate-limit-weight"] >= 1
               for weight in weights.values())
    assert weights["GET /v1/orders"] == {"x-rate-limit-weight": 5}
    assert weights["POST /v1/orders/batch"] == weights["POST /v1/orders/cancel"] == {
        "x-rate-limit-weight": 1, "x-rate-limit-weight-per-item": True}
    assert weights["GET /v1/orderbook/{pair}"] == {"x-rate-limit-weight": 1, "x-rate-limit-weight-max": 10}
    assert weights["GET /v1/candles/{pair}"] == {"x-rate-limit-weight": 1, "x-rate-limit-weight-max": 10}


def test_every_response_has_its_id_the_rate_limit_headers_and_a_429_retry_after(document):
    headers = document["components"]["headers"]
    for label, operation in operations(document):
        for status, response in operation["responses"].items():
            required = {name: resolve_header(headers, header)["required"]
                        for name, header in response["headers"].items()}
            assert required.pop("X-Request-Id"), (label, status)
            # A 503 may be the budgets' store down: it may lack them, and say when to come back.
            expected = {name: status != "503" for name in RATE_LIMIT_HEADERS}
            if status in ("429", "503"):
                expected["Retry-After"] = status == "429"
            assert required == expected, (label, status)


def resolve_header(headers, header):
    return headers[header["$ref"].rsplit("/", 1)[1]] if "$ref" in header else header


def test_every_status_the_server_can_send_is_listed_with_its_codes(document):
    for label, operation in operations(document):
        responses = operation["responses"]
        statuses = set(responses)
        assert {"400", "401", "403", "405", "406", "413", "429", "500", "503"} <= statuses, label
        assert ("404" in statuses) >= ("{" in label), label  # a path parameter can name nothing
        assert ("415" in statuses) == ("requestBody" in operation), label
        listed = set()
        for status, response in responses.items():
            if int(status) >= 400:
                codes = error_codes(document, response)
                assert {ErrorCode(code).status for code in codes} == {int(status)}, (label, status)
                listed |= codes
        assert {code.value for code in EVERY_OPERATION} <= listed, label
        # Signing headers are checked whenever they are sent, on public operations too.
        assert {"INVALID_SIGNATURE", "NONCE_REUSED", "IP_NOT_ALLOWED"} <= listed, label


def test_the_codes_of_each_operation_are_its_own(document):
    codes = {label: set().union(*(error_codes(document, response) for status, response in operation["responses"].items()
                                  if int(status) >= 400))
             for label, operation in operations(document)}

    assert "INSUFFICIENT_SCOPE" not in codes["GET /v1/orders"]  # any key may read
    assert "PERMISSION_DENIED" not in codes["GET /v1/markets"]
    assert {"INSUFFICIENT_SCOPE", "INSUFFICIENT_FUNDS", "POST_ONLY_WOULD_TAKE"} <= codes["POST /v1/orders"]
    assert {"WITHDRAWAL_ADDRESS_NOT_ALLOWED", "WITHDRAWAL_LIMIT_EXCEEDED"} <= codes["POST /v1/withdrawals"]
    assert "DEPTH_REQUIRES_VERIFICATION" in codes["GET /v1/orderbook/{pair}"]
    assert "FAUCET_LIMIT_REACHED" in codes["POST /v1/sandbox/faucet"]
    assert "FAUCET_LIMIT_REACHED" not in codes["POST /v1/orders"]


def test_every_parameter_has_its_bounds_enum_or_pattern(document):
    for label, operation in operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            if schema["type"] == "integer":
                assert "minimum" in schema and "maximum" in schema, (label, parameter["name"])
            else:
                assert "pattern" in schema or "enum" in schema, (label, parameter["name"])


def test_every_decimal_string_has_its_pattern(document):
    def decimals(value, where=""):
        if isinstance(value, dict):
            if value.get("format") == "decimal":
                yield where, value
            for key, item in value.items():
                yield from decimals(item, f"{where}/{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from decimals(item, f"{where}/{index}")

    found = dict(decimals(document))

    assert len(found) > 50 and all("pattern" in schema for schema in found.values()), [
        where for where, schema in found.items() if "pattern" not in schema]
    assert found["/components/schemas/FaucetCredit/properties/available"]["pattern"] == r"^[0-9]+(\.[0-9]+)?$"


def test_request_bodies_refuse_unknown_fields_where_the_server_does(document):
    schemas = document["components"]["schemas"]
    closed = {name for name, schema in schemas.items() if schema.get("additionalProperties") is False}

    assert {"LimitOrderRequest", "MarketBySizeOrderRequest", "MarketByFundsOrderRequest", "StopLimitOrderRequest",
            "StopMarketBySizeOrderRequest", "StopMarketByFundsOrderRequest", "OrderBatchRequest",
            "OrderCancelBatchRequest", "CancelAllRequest", "CancelAllAfterRequest", "WithdrawalCreateRequest"} <= closed
    assert "TransferCreateRequest" not in closed  # the server ignores a field it does not take there


def test_the_order_body_is_a_one_of_by_type(document):
    schemas = document["components"]["schemas"]
    order = schemas["OrderRequest"]

    assert order["discriminator"] == {"propertyName": "type", "mapping": {
        "limit": "#/components/schemas/LimitOrderRequest", "market": "#/components/schemas/MarketOrderRequest",
        "stop": "#/components/schemas/StopOrderRequest"}}
    assert [one["$ref"] for one in order["oneOf"]] == list(order["discriminator"]["mapping"].values())
    by_funds = schemas["MarketByFundsOrderRequest"]
    assert by_funds["required"] == ["pair", "side", "type", "funds"] and "size" not in by_funds["properties"]
    assert by_funds["properties"]["side"]["not"] == {"enum": ["sell"]}
    assert schemas["LimitOrderRequest"]["properties"]["price"]["pattern"] == POSITIVE_DECIMAL_PATTERN


def test_every_field_a_response_always_has_is_required(document):
    for name, schema in document["components"]["schemas"].items():
        if not name.endswith("Request") and "properties" in schema:
            assert set(schema.get("required", [])) == set(schema["properties"]), name


def test_creates_link_to_what_they_made(document):
    created = document["paths"]["/v1/orders"]["post"]["responses"]["201"]["links"]

    assert created["getOrder"] == {"operationId": "getOrder", "parameters": {"id": "$response.body#/order_id"},
                                   "description": "The getOrder operation on what this one answered."}
    assert set(created) == {"getOrder", "cancelOrder"}
    assert "redeemEarnSubscription" in document["paths"]["/v1/earn/subscriptions"]["post"]["responses"]["201"]["links"]


def test_no_description_speaks_of_the_code_inside(document):
    found = [(where, text) for where, text in texts(document) if INTERNAL.search(text)]

    assert found == []


@given(st.one_of(st.text(alphabet="0123456789.-+eE \n", max_size=45), st.from_regex(POSITIVE_DECIMAL_PATTERN)))
def test_the_decimal_pattern_takes_exactly_what_a_request_may_give(text):
    try:
        accepted = DecimalString().to_internal_value(text) > Decimal(0)
    except ValidationError:
        accepted = False

    assert (re.fullmatch(POSITIVE_DECIMAL_PATTERN, text) is not None) == accepted


def test_docs_page_is_served(client, db):
    response = client.get("/v1/docs")

    assert response.status_code == 200
    assert b'<script src="/v1/docs.js"></script>' in response.content
    assert b'url: "/v1/openapi.json"' in client.get("/v1/docs.js").content
