"""The Celery app: workers and beat run the learning loop (drain, bandits, segments, lift, privacy)."""

import os

from celery import Celery

from config.heartbeat import WorkerHeartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Celery's Django fixup runs every system check when a worker starts; the URL check alone imports every view
# (and with them scipy.stats, plotly, DRF's schema machinery): 1.2 of a start's 2.9 CPU-s, for a process that
# serves no URL. The checks run where they mean something, once per deployment: `migrate` runs them all
# (docker compose's migrate service, `make migrate`), and `manage.py check` runs them on demand.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")

app = Celery("kairos")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.steps["consumer"].add(WorkerHeartbeat)
app.autodiscover_tasks()
