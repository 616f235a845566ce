"""A bounded buffer of each pair's recent book deltas, for clients that resume with ``since_sequence``.

Production: a Redis stream per pair whose entry ids are the sequences, trimmed to about
REPLAY_DEPTH entries, so every server process sees what the matcher (another process) published.
Embedded default: a deque in the one process that both matches and serves.
"""

import json
from collections import defaultdict, deque

from django.conf import settings

from exchange.redis import get_redis

REPLAY_DEPTH = 2000

_local: dict[str, deque] = defaultdict(lambda: deque(maxlen=REPLAY_DEPTH))  # the depth when first used


def stream_key(pair: str) -> str:
    return f"book-deltas:{pair}"


def record_delta(pair: str, message: dict) -> None:
    if settings.REDIS_URL:
        get_redis().xadd(stream_key(pair), {"m": json.dumps(message)}, id=f"{message['sequence']}-0",
                         maxlen=REPLAY_DEPTH, approximate=False)
    else:
        _local[pair].append(message)


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
    if settings.REDIS_URL:
        entries = get_redis().xrange(stream_key(pair), min=f"{sequence}-0", max="+")
        buffered = [json.loads(fields[b"m"]) for _, fields in entries]
    else:
        buffered = [m for m in _local[pair] if m["sequence"] >= sequence]
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
