"""Reads of the segments app worth naming (pages, other apps)."""

from personalization import selectors_segments as people
from segments.models import ClusteringRun, MapPoint, RunStatus, Segment, SegmentKind, SegmentMembership


def runs_for_project(*, project_id: int, limit: int = 20) -> list[ClusteringRun]:
    return list(ClusteringRun.objects.filter(project_id=project_id).order_by("-created_at")[:limit])


def run_latest_done(*, project_id: int) -> ClusteringRun | None:
    return ClusteringRun.objects.filter(project_id=project_id, status=RunStatus.DONE).order_by("-created_at").first()


def run_segments(*, run: ClusteringRun) -> list[Segment]:
    return list(Segment.objects.filter(run=run).order_by("index"))


def segments_of_kind(*, project_id: int, kind: str) -> list[Segment]:
    return list(Segment.objects.filter(project_id=project_id, kind=kind).order_by("-created_at"))


def segment_by_key(*, project_id: int, key: str) -> Segment | None:
    return Segment.objects.filter(project_id=project_id, key=key).select_related("run").first()


def segment_members_sample(*, segment: Segment, limit: int = 8) -> list[int]:
    """Profiles in the segment, most typical first (highest score, then lowest id)."""
    rows = SegmentMembership.objects.filter(segment=segment).order_by("-score", "profile_id")
    return list(rows.values_list("profile_id", flat=True)[:limit])


def segment_names(*, project_id: int) -> dict[str, str]:
    """segment key → name, for labels elsewhere (targeting, lift)."""
    return dict(Segment.objects.filter(project_id=project_id).values_list("key", "name"))


def segment_choices(*, project_id: int) -> list[tuple[str, str]]:
    """(key, label) of every segment decide can target: behavior segments of finished runs, lookalikes, rules."""
    rows = (
        Segment.objects.filter(project_id=project_id)
        .exclude(kind=SegmentKind.BEHAVIOR, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED])
        .order_by("kind", "-run_id", "index")
    )
    return [(s.key, f"{s.name} ({s.key}, {s.size:,} people)") for s in rows]


def runs_done(*, project_id: int, limit: int = 20) -> list[ClusteringRun]:
    """Finished (kept) clustering runs, newest first: the runs exposures record a segment of."""
    return list(
        ClusteringRun.objects.filter(project_id=project_id, status=RunStatus.DONE).order_by("-created_at")[:limit]
    )


def run_done_by_id(*, project_id: int, run_id: int) -> ClusteringRun | None:
    return ClusteringRun.objects.filter(project_id=project_id, pk=run_id, status=RunStatus.DONE).first()


def segments_rule_and_lookalike(*, project_id: int) -> list[Segment]:
    """Rule and lookalike segments (a person may be in several), by name."""
    kinds = [SegmentKind.RULE, SegmentKind.LOOKALIKE]
    return list(Segment.objects.filter(project_id=project_id, kind__in=kinds).order_by("name", "key"))


def run_map_points(*, run: ClusteringRun) -> list[tuple[float, float, int]]:
    """The run's 2-D map sample as (x, y, segment index), without anyone who may not be profiled now."""
    rows = list(MapPoint.objects.filter(run=run).order_by("pk").values_list("profile_id", "x", "y", "index"))
    blocked = people.profiles_not_profilable(project_id=run.project_id, profile_ids=[r[0] for r in rows])
    return [(x, y, index) for profile_id, x, y, index in rows if profile_id not in blocked]
