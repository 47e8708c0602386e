"""Beat's scheduler: the standard persistent one, writing beat's heartbeat from its tick.

In a module of its own because celery.beat takes 80 ms to import, and only beat needs it
(settings: CELERY_BEAT_SCHEDULER)."""

import time

from celery.beat import PersistentScheduler

from config.heartbeat import INTERVAL_SECONDS, heartbeat_write
from personalization import rkeys


class HeartbeatScheduler(PersistentScheduler):
    """Writes beat's heartbeat at least every INTERVAL_SECONDS: a tick never sleeps longer than that."""

    def __init__(self, *args, **kwargs):
        self.heartbeat_due = 0.0
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):
        now = time.monotonic()
        if now >= self.heartbeat_due:
            heartbeat_write(rkeys.BEAT_HEARTBEAT)
            self.heartbeat_due = now + INTERVAL_SECONDS
        return min(super().tick(*args, **kwargs), INTERVAL_SECONDS)
