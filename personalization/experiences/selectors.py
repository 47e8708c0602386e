"""Reads of experiences: the list, arms and their outcomes, bandit weight history, audit."""

from django.db.models import Case, Count, Max, Min, Q, When
from django.db.models.functions import Trunc

from personalization.models import (
    Arm,
    AuditEntry,
    BanditWeights,
    Experience,
    ExperienceStatus,
    Exposure,
    Project,
)

# Experiences: the list, the detail page and its live charts.

_STATUS_ORDER = Case(
    When(status=ExperienceStatus.RUNNING, then=0),
    When(status=ExperienceStatus.PAUSED, then=1),
    When(status=ExperienceStatus.DRAFT, then=2),
    default=3,
)


def experiences_for_project(*, project: Project, key: str | None = None) -> list[Experience]:
    """Running first, then paused, drafts and completed; each with `variant_count`."""
    experiences = Experience.objects.filter(project=project).annotate(variant_count=Count("variants"))
    if key is not None:
        experiences = experiences.filter(key=key)
    return list(experiences.order_by(_STATUS_ORDER, "name"))


def experience_for_project(*, project: Project, key: str) -> Experience | None:
    return Experience.objects.filter(project=project, key=key).prefetch_related("variants").first()


def experience_users_by_arm(*, project: Project, keys: list[str] | None = None) -> dict[str, dict[str, int]]:
    """experience key → arm → people exposed (an Exposure row is a person's first exposure)."""
    rows = Exposure.objects.filter(project=project)
    if keys is not None:
        rows = rows.filter(experience_key__in=keys)
    counts: dict[str, dict[str, int]] = {}
    for row in rows.values("experience_key", "arm").annotate(users=Count("id")).order_by():
        counts.setdefault(row["experience_key"], {})[row["arm"]] = row["users"]
    return counts


def project_global_holdout_users(*, project: Project) -> dict:
    """People in the global holdout and everyone exposed to any experience (distinct profiles)."""
    return Exposure.objects.filter(project=project).aggregate(
        held_out=Count("profile", distinct=True, filter=Q(arm=Arm.HOLDOUT_GLOBAL)),
        exposed=Count("profile", distinct=True),
    )


def experience_arm_outcomes(*, experience: Experience) -> list[dict]:
    """Per arm and variant: people exposed and people who converted (goal within the window)."""
    return list(
        Exposure.objects.filter(project_id=experience.project_id, experience_key=experience.key)
        .values("arm", "variant_key")
        .annotate(users=Count("id"), converted=Count("id", filter=Q(converted=True)))
        .order_by("arm", "variant_key")
    )


def experience_conversion_buckets(*, experience: Experience, bucket: str = "day") -> list[dict]:
    """Variant-arm exposures and conversions per exposure `bucket` ("hour" or "day"), oldest first."""
    return list(
        Exposure.objects.filter(project_id=experience.project_id, experience_key=experience.key, arm=Arm.VARIANT)
        .annotate(at=Trunc("exposed_at", bucket))
        .values("at", "variant_key")
        .annotate(users=Count("id"), converted=Count("id", filter=Q(converted=True)))
        .order_by("at", "variant_key")
    )


def experience_exposure_span(*, experience: Experience) -> dict:
    return Exposure.objects.filter(project_id=experience.project_id, experience_key=experience.key).aggregate(
        first=Min("exposed_at"), last=Max("exposed_at")
    )


def experience_weight_segments(*, experience: Experience) -> list[str]:
    """Segments the bandit has weights for; "" (all traffic) first."""
    segments = BanditWeights.objects.filter(experience=experience).values_list("segment", flat=True).distinct()
    return sorted(set(segments), key=lambda s: (s != "", s))


def experience_weight_history(
    *, experience: Experience, segment: str = "", max_points: int = 300
) -> list[BanditWeights]:
    """Bandit updates of one segment, oldest first, thinned to about `max_points`.

    Updates run every few seconds, so a week holds over 100,000 rows; charts need a few hundred.
    Thinning keeps the latest update of each equal time bin, so the newest row is always included.
    """
    rows = BanditWeights.objects.filter(experience=experience, segment=segment)
    span = rows.aggregate(first=Min("computed_at"), last=Max("computed_at"), n=Count("id"))
    if not span["n"]:
        return []
    if span["n"] <= max_points or span["first"] == span["last"]:
        return list(rows.order_by("computed_at"))
    step = (span["last"] - span["first"]) / max_points
    table = BanditWeights._meta.db_table
    thinned = BanditWeights.objects.raw(
        f"""
        SELECT DISTINCT ON (date_bin(%s, computed_at, %s)) *
        FROM {table}
        WHERE experience_id = %s AND segment = %s
        ORDER BY date_bin(%s, computed_at, %s), computed_at DESC
        """,
        [step, span["first"], experience.pk, segment, step, span["first"]],
    )
    return list(thinned)


def experience_audit(*, experience: Experience, limit: int = 50) -> list[AuditEntry]:
    """The newest changes to an experience (create, edits, start/pause/complete)."""
    return list(
        AuditEntry.objects.filter(project_id=experience.project_id, object_type="experience", object_key=experience.key)
        .select_related("actor")
        .order_by("-at")[:limit]
    )
