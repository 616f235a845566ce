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


def deltas_since(pair: str, sequence: int) -> list[dict] | None:
    """The deltas after ``sequence``, contiguous; None when the buffer no longer reaches back that far."""
    if sequence < 0:
        return None
    if settings.REDIS_URL:
        entries = get_redis().xrange(stream_key(pair), min=f"{sequence + 1}-0", max="+")
        messages = [json.loads(fields[b"m"]) for _, fields in entries]
        last = get_redis().xrevrange(stream_key(pair), count=1)
        newest = int(last[0][0].split(b"-")[0]) if last else sequence
    else:
        messages = [m for m in _local[pair] if m["sequence"] > sequence]
        newest = _local[pair][-1]["sequence"] if _local[pair] else sequence
    if newest <= sequence:
        return []
    expected = list(range(sequence + 1, newest + 1))
    return messages if [m["sequence"] for m in messages] == expected else None
