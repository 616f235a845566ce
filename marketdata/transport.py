"""Daphne's side of a WebSocket connection: how much it holds unread, its limits, its close, and writing
prepared frames to it.

Daphne writes whatever the application sends straight into Twisted's transport buffer, which
grows without bound when a client stops reading. Daphne hands each connection a
``partial(server.handle_reply, protocol)`` as its ASGI ``send``, so the protocol (autobahn's), its
transport and the transport's buffer can be found from there. Under any other server (or over TLS
terminated in Daphne) these return None and the checks and the direct writes are skipped.
"""

import errno
from functools import partial

from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from twisted.internet.abstract import FileDescriptor

STATE_OPEN = WebSocketProtocol.STATE_OPEN


def protocol_of(send):
    """Daphne's WebSocket protocol behind an ASGI ``send``, when it writes to Twisted's own TCP transport. Not
    through a wrapper such as TLS terminated in Daphne, whose attributes are those of the TCP transport
    beneath it: a frame written to that socket would go around the encryption."""
    protocol = send.args[0] if isinstance(send, partial) and send.args else None
    return protocol if isinstance(getattr(protocol, "transport", None), FileDescriptor) else None


def pending_output_bytes(protocol) -> int | None:
    """Bytes Daphne holds for the socket, not yet handed to the kernel."""
    if protocol is None:
        return None
    transport = protocol.transport
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def refuse_oversized_with_a_close(protocol, max_bytes: int) -> None:
    """Frames and messages over ``max_bytes`` get a close frame, code 1009 and a reason, from autobahn.

    Daphne sets the limits but keeps autobahn's default of failing a connection by dropping the TCP
    connection, so the client saw a reset and no reason; the options are the protocol's own, copied
    from the factory when the connection was made.
    """
    protocol.failByDrop = False
    protocol.maxFramePayloadSize = protocol.maxMessagePayloadSize = max_bytes


def close_when_read(protocol, code: int, reason: str, wait_seconds: float) -> None:
    """Send the close frame with its reason (Daphne's ``websocket.close`` passes only the code), and
    keep the connection for up to ``wait_seconds`` for the client to read what is queued ahead of it
    and answer. autobahn waits one second by default and then resets the connection, which throws
    away what a client that is not reading has yet to read, the close frame and the error before it
    included."""
    protocol.closeHandshakeTimeout = wait_seconds
    protocol.sendClose(code=code, reason=reason)


def prepare(texts: list[str]) -> bytes:
    """Server text messages framed once (autobahn's broadcast framing), to be written to many
    connections in one write: server frames are not masked, so the bytes are the same for every
    connection and the same as Daphne's own ``send`` writes, message after message."""
    return b"".join(PreparedMessage(text.encode(), isBinary=False, applyMask=False, doNotCompress=True).payloadHybi
                    for text in texts)


def takes_frames(protocol) -> bool:
    """Open, and without per-message compression (which Daphne does not offer), so a prepared frame
    can be written to it as it is."""
    return protocol.state == STATE_OPEN and protocol._perMessageCompress is None


def notify_writes(transport, callback) -> None:
    """``callback()`` before Twisted is handed anything for the socket: Daphne's and autobahn's own
    writes (a handler's message, a ping, a close frame) and the rest of a frame the kernel did not take.
    Frames are written straight to the socket only while Twisted holds nothing for it: the hub's
    direct writes stop at the first such write, until a connection's full checks pass again."""
    write, write_sequence = transport.write, transport.writeSequence

    def notified_write(data):
        callback()
        write(data)

    def notified_write_sequence(data):
        callback()
        write_sequence(data)

    transport.write, transport.writeSequence = notified_write, notified_write_sequence


def write_frame(transport, socket: tuple, frame: bytes) -> None:
    """Write prepared frames behind everything Daphne was handed before them.

    Not through autobahn's sendData (which formats its debug-log arguments on every call) nor
    Twisted's write alone (which waits for the next loop turn, at the price of two epoll changes):
    when nothing is waiting ahead, the frames go to the socket at once (write_at_once: ``socket`` is
    the transport's socket's ``send`` and the transport's ``write``).
    """
    if transport.dataBuffer or transport._tempDataLen:  # Twisted empties dataBuffer once all is written
        transport.write(frame)
    else:
        write_at_once([socket], frame)


def write_at_once(sockets, frame: bytes) -> int:
    """The same frames straight to each socket, given as (its ``send``, its transport's ``write``), for
    sockets Twisted holds nothing for, as asyncio's transports write; only what a kernel does not take
    is left to Twisted, once every socket has been sent to (a write may change what ``sockets``
    iterates over: see notify_writes). The sends follow one another closely: a client woken by one
    (on the same machine) then preempts the loop less often. Returns the sockets written to."""
    size, written, rests = len(frame), 0, []
    for send, write in sockets:
        try:
            sent = send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            if error.errno != errno.ENOBUFS:
                continue  # the connection is gone; Twisted sees it on its next read
            sent = 0  # no buffers for now: Twisted keeps the frame for later, as it does with its own writes
        written += 1
        if sent != size:
            rests.append((write, frame[sent:]))
    for write, rest in rests:
        write(rest)
    return written
