"""The frame the hub builds once per process is the one Daphne's own send writes for the same text."""

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.testing import StringTransport

from marketdata.transport import prepare, takes_frames

HANDSHAKE = (b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def open_server_protocol() -> tuple[WebSocketServerProtocol, StringTransport]:
    """autobahn's server protocol (the one Daphne's WebSocketProtocol extends) after a client's handshake."""
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    protocol, transport = factory.buildProtocol(None), StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    transport.clear()
    return protocol, transport


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 200_000])  # bytes: each length encoding
def test_a_prepared_frame_is_what_daphnes_send_writes(length):
    protocol, transport = open_server_protocol()
    text = "é" + "x" * (length - 2) if length >= 2 else "x" * length  # UTF-8: "é" is two bytes

    protocol.sendMessage(text.encode())  # Daphne's serverSend for {"type": "websocket.send", "text": text}

    assert takes_frames(protocol)
    assert prepare([text]) == transport.value()


def test_messages_prepared_together_are_daphnes_sends_in_order():
    protocol, transport = open_server_protocol()
    texts = ["a", "b" * 200, "c" * 70_000]

    for text in texts:
        protocol.sendMessage(text.encode())

    assert prepare(texts) == transport.value()


def test_a_closing_socket_takes_no_frames():
    protocol, _ = open_server_protocol()

    protocol.sendClose(code=4008)

    assert not takes_frames(protocol)
