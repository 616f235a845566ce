"""The buffers of recent book deltas (marketdata/replay.py), one per stack; settings.REPLAY_BUFFER names
the one a process uses. Each keeps about REPLAY_DEPTH deltas per pair, in sequence order."""

import json
from collections import defaultdict, deque

from exchange.redis import Reply, RoundTrip, get_redis
from marketdata.replay import stream_key

REPLAY_DEPTH = 2000


class LocalReplay:
    """The embedded default: a deque in the one process that both matches and serves."""

    def __init__(self):
        self.deltas: dict[str, deque] = defaultdict(lambda: deque(maxlen=REPLAY_DEPTH))  # the depth when first used

    def record(self, pair: str, message: dict, trip: RoundTrip) -> Reply:
        self.deltas[pair].append(message)
        return Reply()

    def since(self, pair: str, sequence: int) -> list[dict]:
        """The buffered deltas from ``sequence`` on."""
        return [m for m in self.deltas[pair] if m["sequence"] >= sequence]

    def forget_if_ahead(self, pair: str, sequence: int) -> int:
        """Forget the pair's deltas if one is past ``sequence``; how many there were."""
        held = self.deltas[pair]
        if not held or held[-1]["sequence"] <= sequence:
            return 0
        del self.deltas[pair]
        return len(held)

    def reset(self) -> None:
        """Forget every pair's deltas (tests)."""
        self.deltas.clear()


class RedisReplay:
    """Production: a Redis stream per pair whose entry ids are the sequences, so every server process
    sees what the matcher (another process) published."""

    def __init__(self):
        self.redis = get_redis()

    def record(self, pair: str, message: dict, trip: RoundTrip) -> Reply:
        """Queued in ``trip`` (the batch's round trip, marketdata.publishing)."""
        return trip.queue(lambda pipeline: pipeline.xadd(stream_key(pair), {"m": json.dumps(message)},
                                                         id=f"{message['sequence']}-0", maxlen=REPLAY_DEPTH,
                                                         approximate=False))

    def since(self, pair: str, sequence: int) -> list[dict]:
        """The buffered deltas from ``sequence`` on."""
        entries = self.redis.xrange(stream_key(pair), min=f"{sequence}-0", max="+")
        return [json.loads(fields[b"m"]) for _, fields in entries]

    def forget_if_ahead(self, pair: str, sequence: int) -> int:
        """Forget the pair's deltas if one is past ``sequence`` (all of them: a stream refuses an entry id
        below the highest it has had, deleted or not); how many there were."""
        key = stream_key(pair)
        if not self.redis.xrange(key, min=f"{sequence + 1}-0", max="+", count=1):
            return 0
        held = self.redis.xlen(key)
        self.redis.delete(key)
        return held

    def reset(self) -> None:
        """Forget every pair's deltas (tests)."""
        names = list(self.redis.scan_iter(match=stream_key("*")))
        if names:
            self.redis.delete(*names)
