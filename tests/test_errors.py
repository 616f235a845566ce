import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.errors import ErrorCode

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


def test_production_settings_pass_check_deploy(tmp_path):
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "k" * 20 + "A-very-long-and-random-production-secret-0123456789",
        "EXCHANGE_BEHIND_TLS": "true",
        "ALLOWED_HOSTS": "api.exchange.example",
        "EXCHANGE_VAR_DIR": str(tmp_path),
    }

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
