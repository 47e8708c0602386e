"""Lookalike builds in a worker: the dashboard asks (lookalike_build_request), a Celery task builds
(lookalike_build_execute) and reports progress the page polls, like clustering runs.

Why a worker: at 188k people a build took 17 s in the web request, so at a million it would outlast one.
The seed is read when asked (the people chosen then) and kept on the build until it finishes, so a retry
builds the same lookalike; it is cleared when the build is done or failed, so profile ids do not outlive
the job (a build's seed is not one of the registered personal-data locations, being only a job's input).
"""

import logging

import redis
from django.contrib.auth.models import AbstractBaseUser
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from segments.models import LookalikeBuild, RunStatus
from segments.services.clustering import SegmentsError
from segments.services.lookalikes import Seed, lookalike_build, lookalike_name_check, lookalike_size_check

log = logging.getLogger(__name__)


def lookalike_build_request(
    *, project, seed: Seed, size: int, name: str, key: str = "", by: AbstractBaseUser | None = None
) -> LookalikeBuild:
    """Check what can be checked now (name, size, a seed with people) and queue the build."""
    name = lookalike_name_check(name)
    lookalike_size_check(size)
    if not seed.weights:
        raise SegmentsError("seed", "the seed has nobody in it; choose a segment, goal, intent or ids with people")
    build = LookalikeBuild.objects.create(
        project=project,
        name=name,
        key=key,
        size=size,
        seed_weights={str(pid): weight for pid, weight in seed.weights.items()},
        seed_description=seed.description,
        created_by=by,
    )
    transaction.on_commit(lambda: _build_later(build.pk))
    return build


def _build_later(build_id: int) -> None:
    from segments.tasks import lookalike_build_task  # circular: tasks imports services

    lookalike_build_task.delay(build_id)


def lookalike_build_execute(*, build_id: int) -> LookalikeBuild | None:
    """Build the lookalike of a queued build; None when the build is gone, the build untouched when it
    is already finished (a duplicate delivery)."""
    build = LookalikeBuild.objects.filter(pk=build_id).first()
    if build is None or build.status in (RunStatus.DONE, RunStatus.FAILED):
        return build
    LookalikeBuild.objects.filter(pk=build_id).update(status=RunStatus.RUNNING, error="")

    def progress(pct: int, label: str) -> None:
        LookalikeBuild.objects.filter(pk=build_id).update(progress=pct, progress_label=label)

    seed = Seed({int(pid): float(w) for pid, w in build.seed_weights.items()}, build.seed_description)
    try:
        segment = lookalike_build(
            project=build.project,
            seed=seed,
            size=build.size,
            name=build.name,
            key=build.key,
            by=build.created_by,
            progress=progress,
        )
    except (OperationalError, InterfaceError, redis.RedisError):
        raise  # infrastructure: the task retries with the seed still on the build
    except Exception as exc:
        if isinstance(exc, SegmentsError):
            error = f"{exc.field}: {exc.message}"
        else:
            log.exception("lookalike build %s failed", build_id)
            error = (
                f"the build stopped on an unexpected error ({type(exc).__name__}: {str(exc)[:200]}); it is in the"
                " worker's log. Try again; if it happens again, tell your Kairos administrator."
            )
        LookalikeBuild.objects.filter(pk=build_id).update(
            status=RunStatus.FAILED, error=error, seed_weights={}, finished_at=timezone.now()
        )
    else:
        LookalikeBuild.objects.filter(pk=build_id).update(
            status=RunStatus.DONE,
            segment=segment,
            progress=100,
            progress_label="Done",
            seed_weights={},
            finished_at=timezone.now(),
        )
    build.refresh_from_db()
    return build
