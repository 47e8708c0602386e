"""Shared Redis clients: one with short timeouts for request paths, one patient one for workers."""

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=1)
def fast() -> redis.Redis:
    """For the decide and events requests: fail fast, the caller degrades instead of waiting."""
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=0.2, socket_timeout=0.25, health_check_interval=30
    )


@lru_cache(maxsize=1)
def worker() -> redis.Redis:
    """For tasks and pages: waits for Redis rather than failing a job."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=30)


def reset() -> None:
    """Forget the clients (tests switching Redis databases, forked processes)."""
    fast.cache_clear()
    worker.cache_clear()
