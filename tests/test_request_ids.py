"""Request ids (exchange/request_ids.py) and the log lines' format and redaction (exchange/logs.py), in process."""

import io
import json
import logging
import sys

import pytest
from django.test import Client

from exchange import logs, net
from exchange.request_ids import SAFE_ID

pytestmark = pytest.mark.django_db


@pytest.fixture
def log_lines(settings):
    """What the server logs while the test runs, as settings.LOGGING writes it, one JSON object a line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def trusted_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    net.trusted_proxies.cache_clear()
    yield "10.1.2.3"
    net.trusted_proxies.cache_clear()


def test_every_response_has_an_id_and_an_error_body_carries_the_same(markets):
    client = Client()
    ids = set()
    for path in ("/v1/time", "/v1/markets", "/healthz", "/account/login/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert SAFE_ID.fullmatch(response["X-Request-Id"])
        ids.add(response["X-Request-Id"])
    assert len(ids) == 4  # one each
    for response in (client.get("/v1/nowhere"), client.get("/v1/orderbook/NOPE-USD"),
                     client.get("/v1/time?bogus=1"), client.post("/v1/orders", "{", content_type="application/json")):
        assert response.status_code >= 400
        assert response.json()["error"]["request_id"] == response["X-Request-Id"]


def test_a_signed_request_refused_for_its_signature_carries_its_id(alice, make_key):
    bot = make_key(alice)
    response = bot.get("/v1/orders", secret="0" * 64)
    assert response.json()["error"]["code"] == "INVALID_SIGNATURE"
    assert response.json()["error"]["request_id"] == response["X-Request-Id"]


def test_an_incoming_id_is_kept_only_from_a_trusted_proxy_and_only_when_safe(trusted_proxy):
    client = Client()
    sent = "edge-7f3a1b8e.42:01"
    assert client.get("/v1/time", headers={"X-Request-Id": sent}, REMOTE_ADDR=trusted_proxy)["X-Request-Id"] == sent
    # From a client directly: replaced, whatever it looks like.
    assert client.get("/v1/time", headers={"X-Request-Id": sent}, REMOTE_ADDR="203.0.113.9")["X-Request-Id"] != sent
    # From the proxy, but not a safe token: too short, too long, spaces, quotes, a line break.
    for unsafe in ("short", "x" * 129, "two words here", 'quo"te-1234', "line\tbreak-1234", "<script>1234"):
        answered = client.get("/v1/time", headers={"X-Request-Id": unsafe}, REMOTE_ADDR=trusted_proxy)["X-Request-Id"]
        assert answered != unsafe and SAFE_ID.fullmatch(answered)


def test_an_error_bodys_id_is_on_the_servers_line_for_that_request(log_lines, markets):
    response = Client().get("/v1/orderbook/NOPE-USD")
    request_id = response.json()["error"]["request_id"]
    lines = [line for line in log_lines() if line.get("request_id") == request_id]
    assert [line["logger"] for line in lines] == ["exchange.requests"]
    assert lines[0]["message"].startswith("GET /v1/orderbook/NOPE-USD 404 ")
    assert lines[0]["message"].endswith(" ms UNKNOWN_PAIR")


def test_lines_logged_outside_a_request_have_no_id_and_inside_one_have_its_id(log_lines):
    logger = logging.getLogger("tests.request_ids")
    logger.info("before")
    with logs.log_context(request_id="edge-12345678"):
        logger.info("during")
    logger.info("after")
    assert [(line["message"], line.get("request_id")) for line in log_lines()] == [
        ("before", None), ("during", "edge-12345678"), ("after", None)]


SECRET = "5f" * 32
KEY_ID = "hkt_live_0123456789abcdef01234567"


@pytest.mark.parametrize("text, kept, gone", [
    (f"X-Api-Signature: {SECRET}", "X-Api-Signature: [redacted]", SECRET),
    (f"headers={{'X-Api-Key': '{KEY_ID}'}}", "X-Api-Key': '[redacted]", KEY_ID),
    (f"key {KEY_ID} refused", "key hkt_live_0123… refused", KEY_ID),
    (f"secret={SECRET[:10]}&label=bot", "secret=[redacted]&label=bot", SECRET[:10]),
    ('{"password": "hunter2-long"}', '"password": "[redacted]"', "hunter2-long"),
    (f"a bare {SECRET.upper()} in a traceback", "a bare [redacted] in a traceback", SECRET.upper()),
    ("Cookie: sessionid=abcdef0123456789", "Cookie: [redacted]", "abcdef0123456789"),
    # a credential after its scheme: the README's METRICS_TOKEN (openssl rand -hex 24) is below 64 digits
    (f"Authorization: Bearer {SECRET[:48]}", "Authorization: Bearer [redacted]", SECRET[:48]),
    (f"{{'HTTP_AUTHORIZATION': 'Basic {SECRET[:20]}'}}", "'HTTP_AUTHORIZATION': 'Basic [redacted]'", SECRET[:20]),
])
def test_redaction_removes_secrets_signatures_and_key_ids(text, kept, gone):
    assert kept in logs.redact(text)
    assert gone not in logs.redact(text)


def test_redaction_keeps_what_operators_need():
    text = "GET /v1/orders 200 3.1 ms order 123 account 7 request_id=Xb_3-9aQ trade 8f3a2c1d"
    assert logs.redact(text) == text


@pytest.mark.parametrize("formatter", [logs.JsonFormatter(), logs.TextFormatter()])
def test_both_formats_redact_messages_arguments_and_tracebacks(formatter):
    try:
        raise ValueError(f"bad signature {SECRET}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s", (KEY_ID,), sys.exc_info())
    logs.ContextFilter().filter(record)
    line = formatter.format(record)
    assert SECRET not in line and KEY_ID not in line
    assert "hkt_live_0123…" in line and "ValueError" in line


@pytest.mark.parametrize("formatter", [logs.JsonFormatter(), logs.TextFormatter()])
def test_both_formats_redact_a_password_quoted_in_json_text(formatter):
    """JSON quotes the message again: the name's quotes are escaped in the line, not in what was logged."""
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "could not parse %s",
                               ('{"username": "carol", "password": "hunter2-Secret"}',), None)
    logs.ContextFilter().filter(record)
    line = formatter.format(record)
    assert "hunter2-Secret" not in line and "carol" in line


def test_json_lines_are_one_object_a_line_with_the_context():
    record = logging.LogRecord("exchange.requests", logging.INFO, __file__, 1, "GET %s", ("/v1/time",), None)
    with logs.log_context(request_id="req-12345678", connection_id="conn-1234"):
        logs.ContextFilter().filter(record)
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "GET /v1/time" and parsed["level"] == "INFO" and parsed["logger"] == "exchange.requests"
    assert parsed["request_id"] == "req-12345678" and parsed["connection_id"] == "conn-1234"
    text = logs.TextFormatter().format(record)
    assert text.endswith("GET /v1/time [request_id=req-12345678 connection_id=conn-1234]")
