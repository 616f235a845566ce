"""What refuses an oversized or malformed request, and in what form: gunicorn with exchange/gunicorn.conf.py
alone, and nginx with deploy/nginx.conf in front of it. Every refusal is the API's error envelope."""

import contextlib
import re
import shutil
import socket

import httpx
import pytest

from .processes import ROOT, free_port, running
from .test_e2e_matching import rest  # noqa: F401  the fixture

pytestmark = pytest.mark.slow
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


@contextlib.contextmanager
def nginx_in_front(stack, rest_url: str, websocket: str, name: str, site_edits=lambda site: site):
    """deploy/nginx.conf as shipped (but for ``site_edits``), on plain HTTP on a free port, in front of
    the stack's gunicorn and ``websocket`` (host:port) for /v1/ws."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    prefix = stack.tmp / name
    prefix.mkdir()
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = re.sub(r"listen 443 ssl;.*", f"listen 127.0.0.1:{port};", site)
    site = re.sub(r"\n\s*ssl_certificate.*;", "", site)
    site = site.replace("127.0.0.1:8001", rest_url.removeprefix("http://")).replace("127.0.0.1:8002", websocket)
    (prefix / "site.conf").write_text(site_edits(site))
    (prefix / "nginx.conf").write_text(
        f"user root; pid {prefix}/nginx.pid; error_log {prefix}/error.log; events {{}}\n"
        f"http {{ access_log {prefix}/access.log; include {prefix}/site.conf; }}\n")
    with running([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"], stack.env,
                 prefix / "out.log", ready_url=f"http://127.0.0.1:{port}/v1/time"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def proxy(stack, rest):
    """The proxy in front of the stack's gunicorn and a WebSocket address where nothing listens."""
    with nginx_in_front(stack, rest, f"127.0.0.1:{free_port()}", "nginx") as url:
        yield url


def assert_envelope(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


def raw(url: str, request: bytes) -> httpx.Response:
    """Bytes no HTTP client would send; the answer parsed back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


def many_headers(count: int) -> dict[str, str]:
    return {f"X-Field-{i}": "a" for i in range(count)}


@pytest.mark.parametrize("path, headers, status", [
    ("/v1/time?" + "a" * 8200, {}, 414),  # over limit_request_line
    ("/v1/time", {"X-Big": "a" * 8200}, 431),  # over limit_request_field_size
    ("/v1/time", many_headers(101), 431),  # over limit_request_fields
])
def test_gunicorn_refuses_what_is_over_its_limits_with_the_envelope(rest, path, headers, status):
    assert_envelope(httpx.get(rest + path, headers=headers, timeout=10), status, "INVALID_REQUEST")


def test_gunicorn_refuses_a_malformed_request_line_with_the_envelope(rest):
    assert_envelope(raw(rest, b"GET /v1/time\x00 HTTP/1.1\r\nHost: x\r\n\r\n"), 400, "INVALID_REQUEST")


def reached_the_application(response: httpx.Response, parameter: str) -> bool:
    """The long query got through whole to the application, which refuses a parameter it does not take."""
    error = response.json()["error"]
    return (response.status_code, error["code"], error["details"]) == (
        400, "INVALID_PARAMETER", {"parameter": parameter})


def test_under_its_limits_gunicorn_serves(rest):
    response = httpx.get(rest + "/v1/time?" + "a" * 4000, headers={"X-Big": "a" * 4000, **many_headers(90)})
    assert reached_the_application(response, "a" * 4000)


@pytest.mark.parametrize("path, headers, status", [
    ("/v1/time?" + "a" * 5000, {}, 414),  # a request line over one 4 KiB buffer
    ("/v1/time", {"X-Big": "a" * 5000}, 400),  # a header field over one buffer
    ("/v1/time", {f"X-Big-{i}": "a" * 3900 for i in range(5)}, 400),  # headers over the four buffers
])
def test_the_proxy_refuses_below_gunicorns_limits_with_the_envelope(proxy, path, headers, status):
    assert_envelope(httpx.get(proxy + path, headers=headers, timeout=10), status, "INVALID_REQUEST")


def test_the_proxy_refuses_a_body_over_its_limit_with_the_envelope(proxy):
    response = httpx.post(proxy + "/v1/orders", content=b"{" + b" " * (1024 * 1024) + b"}",
                          headers={"Content-Type": "application/json"}, timeout=10)
    assert_envelope(response, 413, "MESSAGE_TOO_LARGE")


def test_the_proxy_refuses_a_malformed_request_line_with_the_envelope(proxy):
    assert_envelope(raw(proxy, b"GARBAGE\r\n\r\n"), 400, "INVALID_REQUEST")


def test_through_the_proxy_too_many_header_fields_are_gunicorns_refusal(proxy):
    assert_envelope(httpx.get(proxy + "/v1/time", headers=many_headers(101), timeout=10), 431, "INVALID_REQUEST")


def test_the_proxy_answers_for_an_upstream_that_is_down_with_service_unavailable_and_retry_after(proxy):
    response = httpx.get(proxy + "/v1/ws", timeout=10)
    assert_envelope(response, 502, "SERVICE_UNAVAILABLE")
    assert response.headers["retry-after"] == "5"


def test_the_proxy_passes_what_is_under_its_limits(proxy):
    response = httpx.get(proxy + "/v1/time?" + "a" * 3000, headers={"X-Big": "a" * 3000})
    assert reached_the_application(response, "a" * 3000)



def test_the_proxy_caps_one_addresss_websocket_connections_with_the_envelope(stack, rest):
    """Two held open (the cap lowered from 100 for the test) to an upstream that accepts and never answers:
    the third handshake from the address is refused, 429 RATE_LIMITED."""
    def lowered(site: str) -> str:
        return site.replace("limit_conn exchange_ws_per_address 100;", "limit_conn exchange_ws_per_address 2;")

    with socket.create_server(("127.0.0.1", 0)) as upstream, contextlib.ExitStack() as held:
        url = held.enter_context(nginx_in_front(stack, rest, f"127.0.0.1:{upstream.getsockname()[1]}",
                                                "nginx-capped", lowered))
        host, port = url.removeprefix("http://").split(":")
        handshake = (b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        for _ in range(2):
            client = held.enter_context(socket.create_connection((host, int(port)), timeout=10))
            client.sendall(handshake)
            held.enter_context(upstream.accept()[0])  # nginx has passed it on: it counts

        third = httpx.get(url + "/v1/ws", timeout=10, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13"})
        assert_envelope(third, 429, "RATE_LIMITED")
        assert third.headers["retry-after"] == "5"
