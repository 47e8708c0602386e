"""Shared Redis clients: one with short timeouts for request paths, one patient one for workers.

On Redis Cluster (settings.KAIROS_REDIS_CLUSTER) both are redis.cluster.RedisCluster clients: every
key carries a hash tag (personalization/rkeys.py), so what one command, transaction or script
touches lies in one slot, and the cluster client sends it to that slot's node.
"""

from collections.abc import Iterable
from functools import lru_cache

import redis
from django.conf import settings
from redis.cluster import RedisCluster


def _client(**options) -> redis.Redis | RedisCluster:
    if getattr(settings, "KAIROS_REDIS_CLUSTER", False):
        return RedisCluster.from_url(settings.REDIS_URL, **options)
    return redis.Redis.from_url(settings.REDIS_URL, **options)


@lru_cache(maxsize=1)
def fast() -> redis.Redis:
    """For the decide and events requests: fail fast, the caller degrades instead of waiting."""
    return _client(socket_connect_timeout=0.2, socket_timeout=0.25, health_check_interval=30)


@lru_cache(maxsize=1)
def worker() -> redis.Redis:
    """For tasks and pages: waits for Redis rather than failing a job."""
    return _client(socket_connect_timeout=5, socket_timeout=30)


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def commands_run(client, commands: Iterable[tuple]) -> list:
    """Raw commands of any slots in one non-transactional pipeline, replies in order: on a cluster
    client each node gets its share (one round trip per node), on a plain one it is one round trip."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()


def reset() -> None:
    """Forget the clients (tests switching Redis databases, forked processes)."""
    fast.cache_clear()
    worker.cache_clear()
