from collections.abc import Callable
from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis:
    """The process's Redis client (connection pool), for the backends of the production stack."""
    return redis.Redis.from_url(**settings.REDIS_CLIENT)


class Reply:
    """What one backend's commands in a RoundTrip came back with (converted), or the error they met."""

    def __init__(self, value=None):
        self.value, self.error = value, None

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class RoundTrip:
    """The Redis commands of several backends, sent in one pipeline (one round trip, no transaction) by
    ``run``, in the order queued. Each ``queue`` returns the Reply its commands fill; a failed command
    fails only its own Reply (a lost connection, all of them). A backend without Redis answers at once
    with a ready Reply (``Reply(value)``) and queues nothing: a trip with nothing queued sends nothing."""

    def __init__(self):
        self.pipeline: redis.client.Pipeline | None = None
        self.replies: list[tuple[Reply, int, int, Callable[[list], object]]] = []

    def queue(self, commands: Callable[[redis.client.Pipeline], object],
              convert: Callable[[list], object] = lambda results: results) -> Reply:
        """``commands(pipeline)`` queues commands; the Reply gets ``convert`` of their results."""
        if self.pipeline is None:
            self.pipeline = get_redis().pipeline(transaction=False)
        start = len(self.pipeline)
        commands(self.pipeline)
        reply = Reply()
        self.replies.append((reply, start, len(self.pipeline), convert))
        return reply

    def run(self) -> None:
        if self.pipeline is None:
            return
        try:
            results = self.pipeline.execute(raise_on_error=False)
        except redis.exceptions.RedisError as error:  # the connection: every command's reply is lost
            for reply, *_ in self.replies:
                reply.error = error
            return
        for reply, start, end, convert in self.replies:
            part = results[start:end]
            reply.error = next((result for result in part if isinstance(result, Exception)), None)
            if reply.error is None:
                reply.value = convert(part)
