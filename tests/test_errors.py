import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.errors import (
    Conflict, ErrorCode, Forbidden, InvalidField, InvalidFields, MarketHalted, NotFound, OrderNotFound,
    ServiceUnavailable, UnknownPair, error_response,
)

from .test_public_api import assert_error

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.urls("tests.failing_urls")
@pytest.mark.parametrize("path", ["/v1/broken-api", "/v1/broken-django"])
def test_unexpected_errors_are_json_500_without_trace(client, db, path):
    client.raise_request_exception = False

    response = client.get(path)

    assert_error(response, 500, "INTERNAL_ERROR")
    assert b"secret-database-password" not in response.content
    assert b"RuntimeError" not in response.content


def test_every_error_code_has_a_distinct_upper_snake_name_and_a_status():
    names = [code.value for code in ErrorCode]
    assert len(names) == len(set(names))
    assert all(name.isupper() and " " not in name for name in names)
    assert {code.status for code in ErrorCode} <= {400, 401, 403, 404, 405, 406, 409, 413, 415, 429, 500, 503}
    spec_minimum = {
        "INVALID_REQUEST": 400, "UNKNOWN_PAIR": 404, "ORDER_NOT_FOUND": 404, "MISSING_AUTH_HEADERS": 401,
        "INVALID_API_KEY": 401, "API_KEY_REVOKED": 401, "INVALID_SIGNATURE": 401, "TIMESTAMP_OUT_OF_WINDOW": 401,
        "NONCE_REUSED": 401, "INSUFFICIENT_SCOPE": 403, "IP_NOT_ALLOWED": 403, "DEPTH_REQUIRES_VERIFICATION": 403,
        "RATE_LIMITED": 429, "INSUFFICIENT_FUNDS": 400, "MARKET_HALTED": 409, "DUPLICATE_CLIENT_ORDER_ID": 409,
        "ORDER_ALREADY_CLOSED": 409, "POST_ONLY_WOULD_TAKE": 409,
    }
    assert {name: ErrorCode(name).status for name in spec_minimum} == spec_minimum


@pytest.mark.parametrize("error, status, body", [
    (InvalidField("size", "Must be positive."), 400,
     {"code": "INVALID_REQUEST", "message": "size: Must be positive.",
      "details": {"fields": {"size": ["Must be positive."]}}}),
    (InvalidFields({"depth": ["Too deep."]}, "depth is too deep."), 400,
     {"code": "INVALID_REQUEST", "message": "depth is too deep.", "details": {"fields": {"depth": ["Too deep."]}}}),
    (UnknownPair("XYZ-USD"), 404,
     {"code": "UNKNOWN_PAIR", "message": "Unknown pair 'XYZ-USD'.", "details": {"pair": "XYZ-USD"}}),
    (OrderNotFound(client_order_id="bot-1"), 404,
     {"code": "ORDER_NOT_FOUND", "message": "No order with client_order_id 'bot-1'.", "details": {}}),
    (MarketHalted("BTC-USD", "cancel_only"), 409,
     {"code": "MARKET_HALTED", "message": "BTC-USD accepts cancels only.", "details": {"status": "cancel_only"}}),
    (Forbidden(ErrorCode.IP_NOT_ALLOWED, "Not from there.", address="192.0.2.1"), 403,
     {"code": "IP_NOT_ALLOWED", "message": "Not from there.", "details": {"address": "192.0.2.1"}}),
])
def test_each_error_family_renders_its_code_status_message_and_details(error, status, body):
    response = error_response(error)

    assert response.status_code == status
    assert response.data == {"error": body}
    assert "Retry-After" not in response


def test_an_outage_says_when_to_retry_and_a_refusal_that_is_not_one_need_not():
    outage, refusal = ServiceUnavailable(order_id=7), ServiceUnavailable("Being changed; retry.", retry_after=None)

    assert error_response(outage)["Retry-After"] == "2"
    assert outage.details == {"order_id": 7, "retry_after": 2}
    assert "Retry-After" not in error_response(refusal) and refusal.details == {}


@pytest.mark.parametrize("family, code", [(Conflict, ErrorCode.UNKNOWN_PAIR), (NotFound, ErrorCode.MARKET_HALTED),
                                          (Forbidden, ErrorCode.INVALID_API_KEY)])
def test_a_family_refuses_a_code_of_another_status(family, code):
    with pytest.raises(ValueError):
        family(code, "wrong family")


def check_deploy(tmp_path, **env: str) -> subprocess.CompletedProcess:
    production = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "k" * 20 + "A-very-long-and-random-production-secret-0123456789",
        "EXCHANGE_BEHIND_TLS": "true",
        "ALLOWED_HOSTS": "api.exchange.example",
        "TRUSTED_PROXIES": "127.0.0.1",
        "EXCHANGE_VAR_DIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env={**production, **env}, capture_output=True, text=True, timeout=120,
    )


def test_production_settings_pass_check_deploy(tmp_path):
    result = check_deploy(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_behind_the_proxy_with_no_trusted_proxy_the_check_warns(tmp_path):
    result = check_deploy(tmp_path, TRUSTED_PROXIES="")

    assert result.returncode != 0
    assert "accounts.W001" in result.stderr and "TRUSTED_PROXIES is empty" in result.stderr
