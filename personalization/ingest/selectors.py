"""Reads of what ingestion counted, stored and could not store: live per-minute counters, a project's
stored history, dead letters."""

import time

from personalization import redis_client, rkeys
from personalization.models import DeadLetter, Event, Exposure, Profile


def metric_per_minute(*, project_id: int, name: str, minutes: int = 60) -> list[tuple[int, int]]:
    """(unix minute, count) for the last `minutes` minutes, oldest first, from the live counters."""
    now_minute = int(time.time() // 60)
    wanted = list(range(now_minute - minutes + 1, now_minute + 1))
    values = redis_client.worker().mget([rkeys.metric(project_id, name, m) for m in wanted])
    return [(m, int(v or 0)) for m, v in zip(wanted, values, strict=True)]


def dead_letters_summary(*, project_id: int, samples: int = 5) -> dict:
    """How many dead letters a project has, and the newest few."""
    rows = DeadLetter.objects.filter(project_id=project_id)
    return {"count": rows.count(), "samples": list(rows.order_by("-created_at", "-id")[:samples])}


def project_history_counts(*, project_id: int) -> dict[str, int]:
    """How many profiles, events and exposures a project has stored, counted in the database."""
    return {
        "profiles": Profile.objects.filter(project_id=project_id).count(),
        "events": Event.objects.filter(project_id=project_id).count(),
        "exposures": Exposure.objects.filter(project_id=project_id).count(),
    }
