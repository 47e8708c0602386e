"""The Celery app: workers and beat run the learning loop (drain, bandits, segments, lift, privacy)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("kairos")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
