"""The logs of an end-to-end run on the production processes (gunicorn, Daphne, a Celery matcher): JSON lines, each
request's id on its line, a WebSocket connection's id on its lines, and nowhere a secret, a signature or a whole
API key id, at the most talkative level (DEBUG)."""

import json
import re

import httpx
import pytest
from hkt_client import Client
from hkt_client.errors import InvalidSignature
from hkt_client.signing import signed_headers
from websockets.sync.client import connect

from .stack import Stack

pytestmark = pytest.mark.slow


def json_lines(text: str) -> list[dict]:
    """The lines of a log that are JSON objects (supervisord's own and Celery's start-up banner are not)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_an_end_to_end_run_logs_ids_and_never_a_secret_signature_or_key_id(tmp_path):
    with Stack(tmp_path, LOG_LEVEL="DEBUG", LOG_FORMAT=None) as stack:  # the production default: JSON
        rest, daphne = stack.start_rest(), stack.start_daphne()
        stack.start_matcher("BTC-USD")
        alice = stack.create_trader("logalice", "USD=100000", "BTC=10")
        bob = stack.create_trader("logbob", "USD=100000", "BTC=10")
        secrets, key_ids = {alice["secret"], bob["secret"]}, {alice["key"], bob["key"]}
        signatures = set()

        def signed(method: str, path: str, body: str = "", secret: str | None = None, **headers) -> httpx.Response:
            sent = signed_headers(alice["key"], secret or alice["secret"], method, path, body)
            signatures.add(sent["X-Api-Signature"])
            return httpx.request(method, rest + path, content=body, headers={**sent, **headers,
                                 "Content-Type": "application/json"}, timeout=10)

        # Signed requests: an order that rests, one that trades against it, a read, a bad signature.
        sold = signed("POST", "/v1/orders", json.dumps({"pair": "BTC-USD", "side": "sell", "type": "limit",
                                                         "price": "100", "size": "0.5"}))
        assert sold.status_code == 201
        Client(rest, bob["key"], bob["secret"]).place_order("BTC-USD", "buy", "limit", price="100", size="0.5")
        assert signed("GET", "/v1/account/balances").status_code == 200
        refused = signed("GET", "/v1/orders", secret="f" * 64)
        assert refused.json()["error"]["code"] == "INVALID_SIGNATURE"
        with pytest.raises(InvalidSignature) as raised:
            Client(rest, bob["key"], "0" * 64).balances()
        assert raised.value.request_id and raised.value.request_id != refused.headers["X-Request-Id"]

        # gunicorn's own refusal (a header field over its limit) has an id too, in the body and on its line.
        too_long = httpx.get(f"{rest}/v1/time", headers={"X-Long": "x" * 9000}, timeout=10)
        assert too_long.status_code == 431
        assert too_long.json()["error"]["request_id"] == too_long.headers["X-Request-Id"]

        # The WebSocket: an auth op, a subscription, and the same again with a bad signature.
        ws = daphne.replace("http://", "ws://") + "/v1/ws"
        with connect(ws) as socket:
            for secret in (alice["secret"], "e" * 64):
                headers = signed_headers(alice["key"], secret, "GET", "/v1/ws")
                signatures.add(headers["X-Api-Signature"])
                socket.send(json.dumps({"op": "auth", "key": alice["key"], "timestamp": headers["X-Api-Timestamp"],
                                        "nonce": headers["X-Api-Nonce"], "signature": headers["X-Api-Signature"]}))
                json.loads(socket.recv(timeout=10))
            socket.send(json.dumps({"op": "subscribe", "channels": [{"name": "orders"}]}))
            socket.recv(timeout=10)

        stack.processes.close()  # every process stopped: their logs are whole
        logs = {path: path.read_text(errors="replace") for path in tmp_path.rglob("*.log")}

    everything = "\n".join(logs.values())
    assert everything
    for secret in secrets | signatures:
        assert secret not in everything
    for key_id in key_ids:
        assert key_id not in everything
    assert not re.search(r"hkt_(live|test)_[0-9a-f]{5}", everything)  # a key id at most as its first 4 digits

    gunicorn = next(text for path, text in logs.items() if path.name.startswith("gunicorn-"))
    assert [line for line in gunicorn.splitlines() if not line.startswith("{")] == []  # every line is JSON
    lines = json_lines(gunicorn)
    refusal = [line for line in lines if line.get("request_id") == refused.json()["error"]["request_id"]]
    assert [line["message"].split()[:3] + line["message"].split()[-1:] for line in refusal] == [
        ["GET", "/v1/orders", "401", "INVALID_SIGNATURE"]]
    assert any(line.get("request_id") == raised.value.request_id for line in lines)
    assert [line["message"] for line in lines if line.get("request_id") == too_long.headers["X-Request-Id"]] == [
        "refused by gunicorn: 431 Request Header Fields Too Large"]

    daphne_logs = [text for path, text in logs.items() if path.parent.name.startswith("websocket-")
                   and path.name.startswith("daphne-")]
    assert daphne_logs and [line for text in daphne_logs for line in text.splitlines() if not line.startswith("{")] \
        == []  # every line is JSON
    websocket = [line for text in daphne_logs for line in json_lines(text)]
    authenticated = [line for line in websocket if line["message"].startswith("WebSocket connection authenticated")]
    assert len(authenticated) == 1 and authenticated[0]["connection_id"]
    assert {line.get("connection_id") for line in websocket if line["message"].startswith("WebSocket connection")} \
        == {authenticated[0]["connection_id"]}

    matcher = logs[tmp_path / "matcher-BTC-USD.log"]
    assert any(line["message"].endswith(" ready.") for line in json_lines(matcher))
    # The matcher's line for the order carries the id of the request that placed it.
    placed = [line for line in json_lines(matcher)
              if line["message"].startswith(f"BTC-USD: new order {sold.json()['order_id']} matched in batch ")]
    assert [line.get("request_id") for line in placed] == [sold.headers["X-Request-Id"]]
