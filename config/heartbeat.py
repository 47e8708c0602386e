"""Liveness of the Celery worker and of beat, each written by its own main loop every few seconds.

The heartbeat used to be a task that beat sent and a worker ran, so it waited for a free pool slot: a
worker busy with two long jobs (the first backfills of `make run`, a lift report on a big project)
looked dead to /readyz, and `make run`'s runner restarted it after five minutes. Now the worker's
consumer (its main process, which runs while it is connected to the broker) and beat's scheduler loop
each write their own key, whatever the pool is doing. A pool process stuck inside one task is not a
missing heartbeat any more: the task time limit (config/settings/tasks.py) ends it.
"""

import contextlib
import time

import redis
from celery import bootsteps

from config.env import env_int
from personalization import redis_client, rkeys

# Every 5 s: a minute without one means the process is gone (rkeys.WORKER_HEARTBEAT_MAX_AGE_SECONDS).
# Tests that watch a heartbeat come back shorten it.
INTERVAL_SECONDS = env_int("KAIROS_HEARTBEAT_MS", 5000) / 1000


def heartbeat_write(key: str) -> None:
    """One SET with the request-path client (a 0.25 s timeout): it runs inside the worker's event loop
    and beat's tick, which must not wait on a Redis that is away; the next beat writes again."""
    with contextlib.suppress(redis.RedisError):
        redis_client.fast().set(key, int(time.time()), ex=rkeys.WORKER_HEARTBEAT_MAX_AGE_SECONDS * 4)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """A consumer step: started once the worker is connected to the broker, stopped when it loses it."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, consumer, **kwargs):
        self.timer_ref = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer):
        heartbeat_write(rkeys.WORKER_HEARTBEAT)
        self.timer_ref = consumer.timer.call_repeatedly(INTERVAL_SECONDS, heartbeat_write, (rkeys.WORKER_HEARTBEAT,))

    def stop(self, consumer):
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    shutdown = stop
