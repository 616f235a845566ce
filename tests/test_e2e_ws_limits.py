"""The WebSocket's limits under real Daphne (bin/start-websocket): refusals are a close frame with a
code and a reason, or an error message, never a dropped connection without a word."""

import json
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from marketdata.consumers import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

from .test_e2e_streams import delta_text, publish_deltas, subscribe_message

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws_url(stack):
    return stack.start_daphne().replace("http://", "ws://") + "/v1/ws"


def padded_subscribe(size: int) -> str:
    message = json.loads(subscribe_message("BTC-USD"))
    return json.dumps({**message, "pad": "x" * size})


def received_until_closed(client) -> tuple[list[dict], ConnectionClosed]:
    received = []
    try:
        while True:
            received.append(json.loads(client.recv(timeout=30)))
    except ConnectionClosed as closed:
        return received, closed


@pytest.mark.parametrize("fragments", [
    [padded_subscribe(MAX_FRAME_BYTES)],  # one frame over the limit
    [padded_subscribe(MAX_FRAME_BYTES)[:600_000], padded_subscribe(MAX_FRAME_BYTES)[600_000:]],  # one message
])
def test_an_oversized_frame_or_message_is_refused_with_a_close_1009_and_a_reason(ws_url, fragments):
    with connect(ws_url, max_size=None) as client:
        client.send(fragments if len(fragments) > 1 else fragments[0])
        received, closed = received_until_closed(client)

    assert received == []  # nothing subscribed
    assert closed.rcvd.code == 1009 and "exceeds payload limit of 1048576" in closed.rcvd.reason


def test_a_message_under_the_frame_limit_but_over_16_kib_gets_message_too_large_and_the_connection_stays(ws_url):
    with connect(ws_url) as client:
        client.send(padded_subscribe(64 * 1024))
        error = json.loads(client.recv(timeout=10))
        client.send(json.dumps({"op": "ping"}))
        after = json.loads(client.recv(timeout=10))  # a pong, not a "subscribed"

    assert error["type"] == "error" and error["code"] == "MESSAGE_TOO_LARGE"
    assert str(MAX_MESSAGE_BYTES) in error["message"]
    assert after == {"type": "pong"}


def test_a_slow_consumer_that_reads_only_after_being_cut_off_finds_the_reason_before_the_close(stack):
    url = stack.start_daphne(WS_MAX_PENDING_BYTES="1000000", WS_WRITE_LOW_WATER_BYTES="65536",
                             WS_HEARTBEAT_SECONDS="600")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    raw.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    with connect(url.replace("http://", "ws://") + "/v1/ws", sock=raw, max_size=None, max_queue=1) as stalled:
        stalled.send(subscribe_message("ETH-USD"))
        first = [json.loads(stalled.recv(timeout=30)) for _ in range(2)]  # subscribed, snapshot; then no reads
        sequence = first[1]["sequence"]

        publish_deltas(stack, "ETH-USD", {sequence + i: delta_text("ETH-USD", sequence + i, pad=20_000)
                                          for i in range(1, 401)})  # 8 MB
        time.sleep(15)  # the server cut it off meanwhile (it used to reset the connection after 11 s)

        received, closed = received_until_closed(stalled)

    deltas = [m["sequence"] for m in received if m["type"] == "delta"]
    assert deltas == list(range(sequence + 1, sequence + 1 + len(deltas))) and len(deltas) < 400
    assert received[-1]["type"] == "error" and received[-1]["code"] == "SLOW_CONSUMER"
    assert closed.rcvd.code == 4008 and closed.rcvd.reason.startswith("slow consumer")
