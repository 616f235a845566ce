"""How much a WebSocket connection has queued but the client has not read yet.

Daphne writes whatever the application sends straight into Twisted's transport buffer, which
grows without bound when a client stops reading. Daphne hands each connection a
``partial(server.handle_reply, protocol)`` as its ASGI ``send``, so the transport, and its buffer,
can be found from there. Under any other server these return None and the checks are skipped.
"""

import fcntl
import struct
import termios
from functools import partial


def transport_of(send):
    protocol = send.args[0] if isinstance(send, partial) and send.args else None
    transport = getattr(protocol, "transport", None)
    return transport if hasattr(transport, "dataBuffer") else None


def pending_output_bytes(send) -> int | None:
    """Bytes Daphne holds for the socket, not yet handed to the kernel."""
    transport = transport_of(send)
    if transport is None:
        return None
    return len(transport.dataBuffer) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def unread_bytes(send) -> int | None:
    """Daphne's buffer plus the kernel's send queue (Linux TIOCOUTQ): all the client has yet to read."""
    pending = pending_output_bytes(send)
    transport = transport_of(send)
    try:
        queued = fcntl.ioctl(transport.socket.fileno(), termios.TIOCOUTQ, struct.pack("I", 0))
    except (AttributeError, OSError):
        return pending
    return pending + struct.unpack("I", queued)[0]
