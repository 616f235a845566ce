"""A bounded buffer of each pair's recent book deltas, for clients that resume with ``since_sequence``.

Production: a Redis stream per pair, so every server process sees what the matcher (another process)
published. Embedded default: a deque in the one process that both matches and serves. Which one is
settings.REPLAY_BUFFER (marketdata/replay_backends.py).
"""

from exchange.backends import chosen
from exchange.redis import Reply, RoundTrip


def buffer():
    return chosen("REPLAY_BUFFER")


def stream_key(pair: str) -> str:
    return f"book-deltas:{pair}"


def record_delta(pair: str, message: dict, trip: RoundTrip) -> Reply:
    """Queued in ``trip``: the delta is recorded once it has run, unless its Reply holds an error."""
    return buffer().record(pair, message, trip)


def deltas_since(pair: str, sequence: int, committed: int, must_reach: int | None = None) -> list[dict] | None:
    """The buffered deltas after ``sequence``, contiguous; [] when there is nothing to catch up.

    ``committed`` is the pair's committed sequence, read just before. The buffer may end below it:
    a delta is recorded just after its commit, and reaches the client through its channel anyway
    (or, if it was lost, through the next delta's gap check or the next heartbeat, which pass
    ``must_reach``). None when the buffer cannot serve: it no longer reaches back to ``sequence``,
    it is empty (a restart: it cannot tell what it misses), it ends below ``must_reach``, or
    ``sequence`` is ahead of the database. The client then gets a snapshot."""
    if sequence < 0 or sequence > committed:
        return None
    if sequence == committed:
        return []
    buffered = buffer().since(pair, sequence)
    if buffered and buffered[0]["sequence"] == sequence:
        buffered = buffered[1:]  # the buffer holds the client's own last delta: it reaches back
    elif not buffered or buffered[0]["sequence"] != sequence + 1:
        return None
    sequences = [m["sequence"] for m in buffered]
    if sequences != list(range(sequence + 1, sequence + 1 + len(sequences))):
        return None
    if must_reach is not None and sequence + len(sequences) < must_reach:
        return None
    return buffered
