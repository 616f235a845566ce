"""Daphne's side of a WebSocket connection: how much it holds unread, and writing prepared frames to it.

Daphne writes whatever the application sends straight into Twisted's transport buffer, which
grows without bound when a client stops reading. Daphne hands each connection a
``partial(server.handle_reply, protocol)`` as its ASGI ``send``, so the protocol (autobahn's), its
transport and the transport's buffer can be found from there. Under any other server (or over TLS
terminated in Daphne) these return None and the checks and the direct writes are skipped.
"""

import fcntl
import struct
import termios
from functools import partial

from autobahn.websocket.protocol import PreparedMessage


def protocol_of(send):
    """Daphne's WebSocket protocol behind an ASGI ``send``, when it writes to a plain TCP transport."""
    protocol = send.args[0] if isinstance(send, partial) and send.args else None
    return protocol if hasattr(getattr(protocol, "transport", None), "dataBuffer") else None


def pending_output_bytes(protocol) -> int | None:
    """Bytes Daphne holds for the socket, not yet handed to the kernel."""
    if protocol is None:
        return None
    transport = protocol.transport
    return len(transport.dataBuffer) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def unread_bytes(protocol) -> int | None:
    """Daphne's buffer plus the kernel's send queue (Linux TIOCOUTQ): all the client has yet to read."""
    pending = pending_output_bytes(protocol)
    try:
        queued = fcntl.ioctl(protocol.transport.socket.fileno(), termios.TIOCOUTQ, struct.pack("I", 0))
    except (AttributeError, OSError):
        return pending
    return pending + struct.unpack("I", queued)[0]


def prepare(text: str) -> bytes:
    """A server text message framed once (autobahn's broadcast framing), to be written to many
    connections: server frames are not masked, so the bytes are the same for every connection and
    the same as Daphne's own ``send`` writes."""
    return PreparedMessage(text.encode(), isBinary=False, applyMask=False, doNotCompress=True).payloadHybi


def takes_frames(protocol) -> bool:
    """Open, and without per-message compression (which Daphne does not offer), so a prepared frame
    can be written to it as it is."""
    return protocol.state == protocol.STATE_OPEN and protocol._perMessageCompress is None


def write_frame(protocol, frame: bytes) -> None:
    """Write a prepared frame behind everything Daphne was handed before it.

    Not through autobahn's sendData (which formats its debug-log arguments on every call) nor
    Twisted's write alone (which waits for the next loop turn, at the price of two epoll changes):
    when nothing is waiting ahead, the frame goes to the socket at once, as asyncio's transports do,
    and only what the kernel does not take is left to Twisted.
    """
    transport = protocol.transport
    if not pending_output_bytes(protocol):
        try:
            frame = frame[transport.socket.send(frame):]
        except BlockingIOError:
            pass
        except OSError:
            return  # the connection is gone; Twisted sees it on its next read
    if frame:
        transport.write(frame)
