from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis:
    """The process's Redis client (connection pool), for the backends of the production stack."""
    return redis.Redis.from_url(**settings.REDIS_CLIENT)
