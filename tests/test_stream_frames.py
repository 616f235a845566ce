"""The frame the hub builds once per process is the one Daphne's own send writes for the same text; it goes
straight to Twisted's own TCP connections only, and a send the kernel refuses for now is left to Twisted."""

import errno
from functools import partial

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import tcp
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from marketdata.transport import prepare, protocol_of, takes_frames, write_at_once

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


def daphnes_send(protocol):
    """The ASGI ``send`` Daphne hands a connection: ``partial(server.handle_reply, protocol)``."""
    return partial(lambda protocol, message: None, protocol)


def test_frames_go_straight_to_twisteds_own_tcp_connection_only():
    protocol, _ = open_server_protocol()
    protocol.transport = tcp.Server.__new__(tcp.Server)  # as under Daphne on plain TCP
    assert protocol_of(daphnes_send(protocol)) is protocol

    # TLS terminated in Daphne wraps the TCP connection (TLSMemoryBIOProtocol is a ProtocolWrapper), and
    # answers for its attributes: a frame written to that socket would go around the encryption.
    wrapper = ProtocolWrapper(WrappingFactory(None), protocol)
    wrapper.transport = protocol.transport
    wrapper.transport.dataBuffer = b""
    protocol.transport = wrapper
    assert wrapper.dataBuffer == b""  # the TCP connection's, through the wrapper
    assert protocol_of(daphnes_send(protocol)) is None


def test_a_send_refused_for_want_of_buffers_leaves_the_frame_to_twisted():
    kept, gone = [], []

    def no_buffers(frame):
        raise OSError(errno.ENOBUFS, "No buffer space available")

    def reset(frame):
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    written = write_at_once([(no_buffers, kept.append), (reset, gone.append)], b"frame")

    assert kept == [b"frame"]  # sent later, by Twisted, as it does with its own writes
    assert gone == [] and written == 1  # the connection is gone: Twisted sees it on its next read
