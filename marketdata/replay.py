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


def deltas_since(pair: str, sequence: int, committed: int) -> list[dict] | None:
    """The deltas after ``sequence``, contiguous and reaching at least ``committed`` (the pair's
    committed sequence, read just before); [] when there is nothing to catch up. None when the
    buffer cannot give them: it no longer reaches back that far, it is behind the database (emptied
    by a restart, a delta lost between a commit and its publication), or ``sequence`` is ahead of the
    database. A client then gets a snapshot: a resume must never leave a book silently behind."""
    if sequence < 0 or sequence > committed:
        return None
    if sequence == committed:
        return []
    if settings.REDIS_URL:
        entries = get_redis().xrange(stream_key(pair), min=f"{sequence + 1}-0", max="+")
        messages = [json.loads(fields[b"m"]) for _, fields in entries]
    else:
        messages = [m for m in _local[pair] if m["sequence"] > sequence]
    sequences = [m["sequence"] for m in messages]
    if sequences != list(range(sequence + 1, sequence + 1 + len(sequences))) or not sequences or sequences[-1] < committed:
        return None
    return messages
