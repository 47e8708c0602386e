"""Celery tasks of the personalization app: thin wrappers around services."""

import redis
from celery import shared_task
from django.db import OperationalError

from personalization import services
from personalization.models import Project

# Short, so drains (started every second by beat) never crowd bandit updates and reports out of the
# worker; a backlog is worked off by consecutive runs.
_DRAIN_BUDGET_SECONDS = 3.0


@shared_task(
    autoretry_for=(redis.ConnectionError, OperationalError), retry_backoff=True, retry_jitter=True, acks_late=True
)
def events_drain_task() -> int:
    """Drain the event stream until it is empty or the time budget is spent (beat starts another)."""
    return services.events_drain_backlog(budget_seconds=_DRAIN_BUDGET_SECONDS)


@shared_task(autoretry_for=(redis.ConnectionError, OperationalError), retry_backoff=True, acks_late=True)
def api_key_last_used_flush_task() -> int:
    return services.api_key_last_used_flush()


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, acks_late=True)
def partitions_ensure_task() -> list[str]:
    """Daily: the coming months' partitions of events and exposures (idempotent: a second run creates none)."""
    return services.partitions_ensure()


@shared_task(autoretry_for=(redis.ConnectionError, OperationalError), retry_backoff=True, acks_late=True)
def api_keys_publish_task() -> int:
    return services.api_keys_publish()


@shared_task(autoretry_for=(redis.ConnectionError, OperationalError), retry_backoff=True, acks_late=True)
def bandits_update_task() -> int:
    """Update every running bandit, then republish each touched project's snapshot once."""
    running = services.bandit_experiences_running()
    for experience_id, _ in running:
        services.bandit_update(experience_id=experience_id)
    for project_id in {project_id for _, project_id in running}:
        services.snapshot_publish(project_id=project_id)
    return len(running)


@shared_task(autoretry_for=(redis.ConnectionError, OperationalError), retry_backoff=True, acks_late=True)
def snapshots_publish_task() -> int:
    """Republish every project's snapshot now and then, so a Redis that lost its data heals itself."""
    project_ids = list(Project.objects.values_list("pk", flat=True))
    for project_id in project_ids:
        services.snapshot_publish(project_id=project_id)
    return len(project_ids)
