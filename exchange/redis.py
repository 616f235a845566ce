from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis:
    """The process's Redis client (connection pool), for the production stack only."""
    return redis.Redis.from_url(settings.REDIS_URL, **settings.REDIS_TIMEOUTS)
