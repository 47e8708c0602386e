"""Celery tasks of the segments app: thin wrappers around services."""

import redis
from celery import shared_task
from django.db import OperationalError

from personalization import selectors as personalization_selectors
from segments import services
from segments.models import EmbedderVersion, Intent

_RETRY = {"autoretry_for": (redis.ConnectionError, OperationalError), "retry_backoff": True, "retry_jitter": True}


def events_drained_receiver(sender, *, project_id: int, profile_ids: list[int], **kwargs) -> None:
    """After a drain step: fold the profiles with new events in, once the project has an embedder."""
    if profile_ids and EmbedderVersion.objects.filter(project_id=project_id).exists():
        embeddings_fold_in_task.delay(project_id, profile_ids)


@shared_task(acks_late=True, **_RETRY)
def embeddings_fold_in_task(project_id: int, profile_ids: list[int]) -> dict:
    return services.embeddings_fold_in(project_id=project_id, profile_ids=profile_ids)


@shared_task(acks_late=True, **_RETRY)
def clustering_run_task(run_id: int) -> str:
    run = services.clustering_run_execute(run_id=run_id)
    return run.status if run else "gone"  # a deleted run: nothing to do


@shared_task(acks_late=True, **_RETRY)
def lookalike_build_task(build_id: int) -> str:
    build = services.lookalike_build_execute(build_id=build_id)
    return build.status if build else "gone"  # a deleted build: nothing to do


@shared_task(acks_late=True, **_RETRY)
def clustering_runs_resume_task() -> int:
    return services.clustering_runs_resume()


@shared_task(acks_late=True, **_RETRY)
def memberships_publish_resume_task() -> int:
    return services.memberships_publish_resume()


@shared_task(acks_late=True, **_RETRY)
def embeddings_refit_nightly_task() -> int:
    """Refit every project's embedder; live runs keep folding people in on the basis they were made on."""
    count = 0
    for project_id in personalization_selectors.projects_ids():
        if services.embeddings_refit(project_id=project_id) is not None:
            count += 1
    return count


@shared_task(acks_late=True, **_RETRY)
def rule_segments_refresh_task() -> int:
    return services.rule_segments_refresh_all()


@shared_task(acks_late=True, **_RETRY)
def score_run_task(run_id: int) -> str:
    run = services.score_run_execute(run_id=run_id)
    return run.status if run else "gone"  # a deleted run: nothing to do


@shared_task(acks_late=True, **_RETRY)
def score_runs_scheduled_task() -> int:
    return services.score_runs_scheduled()


def intents_drained_receiver(sender, *, project_id: int, profile_ids: list[int], **kwargs) -> None:
    """After a drain step: score the profiles with new events on the project's intents, if it has any."""
    if profile_ids and Intent.objects.filter(project_id=project_id).exists():
        intents_score_task.delay(project_id, profile_ids)


@shared_task(acks_late=True, **_RETRY)
def intents_score_task(project_id: int, profile_ids: list[int]) -> dict:
    return services.intents_score(project_id=project_id, profile_ids=profile_ids)


@shared_task(acks_late=True, **_RETRY)
def intents_rescore_task(project_id: int) -> int:
    return services.intents_rescore(project_id=project_id)


@shared_task(acks_late=True, **_RETRY)
def intents_rescore_nightly_task() -> int:
    """Score everyone of every project with intents again (their scores fade with the age of their words)."""
    return services.intents_rescore_all()
