"""How much a WebSocket connection has queued but not yet written to its socket.

Daphne writes whatever the application sends straight into Twisted's transport buffer, which
grows without bound when a client stops reading. Daphne hands each connection a
``partial(server.handle_reply, protocol)`` as its ASGI ``send``, so the transport, and its buffer,
can be found from there. Under any other server this returns None and the check is skipped.
"""

from functools import partial


def pending_output_bytes(send) -> int | None:
    protocol = send.args[0] if isinstance(send, partial) and send.args else None
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "dataBuffer"):
        return None
    return len(transport.dataBuffer) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)
