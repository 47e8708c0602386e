"""Reads of the personalization app worth naming."""

import time

from personalization import redis_client, rkeys
from personalization.models import ApiKey, Event, Membership, Profile, Project


def metric_per_minute(*, project_id: int, name: str, minutes: int = 60) -> list[tuple[int, int]]:
    """(unix minute, count) for the last `minutes` minutes, oldest first, from the live counters."""
    now_minute = int(time.time() // 60)
    wanted = list(range(now_minute - minutes + 1, now_minute + 1))
    values = redis_client.worker().mget([rkeys.metric(project_id, name, m) for m in wanted])
    return [(m, int(v or 0)) for m, v in zip(wanted, values, strict=True)]


def project_keys(*, project: Project) -> list[ApiKey]:
    return list(ApiKey.objects.filter(project=project).order_by("revoked_at", "-created_at"))


def project_members(*, project: Project) -> list[Membership]:
    return list(Membership.objects.filter(project=project).select_related("user").order_by("user__username"))


def project_counts(*, project: Project) -> dict:
    return {
        "profiles": Profile.objects.filter(project=project).count(),
        "events": Event.objects.filter(project=project).count(),
    }


def profiles_for_project(*, project_id: int):
    return Profile.objects.filter(project_id=project_id).order_by("-last_seen")


def profile_events(*, project_id: int, profile_id: int):
    return Event.objects.filter(project_id=project_id, profile_id=profile_id).order_by("-ts")
