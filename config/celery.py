"""The Celery app: workers and beat run the learning loop (drain, bandits, segments, lift, privacy)."""

import os

from celery import Celery

from config.heartbeat import WorkerHeartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("kairos")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.steps["consumer"].add(WorkerHeartbeat)
app.autodiscover_tasks()
