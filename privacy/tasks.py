"""Celery tasks of the privacy app: thin wrappers around services."""

import redis
from celery import shared_task
from django.db import OperationalError

from privacy import services


@shared_task(
    autoretry_for=(redis.ConnectionError, OperationalError), retry_backoff=True, retry_jitter=True, acks_late=True
)
def dsr_run_task(request_id: int) -> str:
    """Export, erase, object or restrict; a second delivery (after a worker crash) resumes the job."""
    return services.dsr_run(request_id=request_id)


@shared_task(autoretry_for=(redis.ConnectionError, OperationalError), retry_backoff=True, acks_late=True)
def privacy_housekeeping_task() -> dict:
    """Hourly: raw events and exposures past their retention, expired export files, the suppression list in Redis."""
    deleted = services.retention_apply()
    return {
        "events_deleted": sum(deleted["events"].values()),
        "exposures_deleted": sum(deleted["exposures"].values()),
        "exports_deleted": services.exports_expire(),
        "suppressed": services.suppression_republish(),
    }
