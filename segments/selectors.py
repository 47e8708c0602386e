"""Reads of the segments app worth naming (pages, other apps)."""

from django.db import connection
from django.db.models import F

from personalization import selectors as people
from personalization.segment_keys import run_of_key
from segments.explain import segment_headline
from segments.models import (
    ClusteringRun,
    EmbedderVersion,
    Intent,
    MapPoint,
    ProfileIntent,
    ProfileScore,
    RunStatus,
    ScoreRun,
    Segment,
    SegmentKind,
    SegmentMembership,
)


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


def segment_traits(*, project_id: int, keys: list[str]) -> dict[str, str]:
    """segment key → the behavior that sets it apart most, as words ("viewed trail-shoes pages"), for
    the behavior segments among `keys` that have a card; decide's explain says it of a targeted segment."""
    rows = Segment.objects.filter(project_id=project_id, key__in=keys, kind=SegmentKind.BEHAVIOR)
    traits = {key: segment_headline(card or {}) for key, card in rows.values_list("key", "card")}
    return {key: trait for key, trait in traits.items() if trait}


def segment_choices(*, project_id: int) -> list[tuple[str, str]]:
    """(key, label) of every segment decide can target: behavior segments of finished runs, lookalikes, rules."""
    rows = (
        Segment.objects.filter(project_id=project_id)
        .exclude(kind=SegmentKind.BEHAVIOR, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED])
        .order_by("kind", "-run_id", "index")
    )
    return [(s.key, f"{s.name} ({s.key}, {s.size:,} people)") for s in rows]


def run_done_by_id(*, project_id: int, run_id: int) -> ClusteringRun | None:
    return ClusteringRun.objects.filter(project_id=project_id, pk=run_id, status=RunStatus.DONE).first()


def segments_rule_and_lookalike(*, project_id: int) -> list[Segment]:
    """Rule and lookalike segments (a person may be in several), by name."""
    kinds = [SegmentKind.RULE, SegmentKind.LOOKALIKE]
    return list(Segment.objects.filter(project_id=project_id, kind__in=kinds).order_by("name", "key"))


def segments_for_api(*, project_id: int, kind: str | None = None, run_id: int | None = None):
    """Every targetable segment of the project for the REST list, newest run first (a queryset to page)."""
    rows = Segment.objects.filter(project_id=project_id).exclude(
        kind=SegmentKind.BEHAVIOR, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED]
    )
    if kind:
        rows = rows.filter(kind=kind)
    if run_id is not None:
        rows = rows.filter(run_id=run_id)
    return rows.order_by(F("run_id").desc(nulls_last=True), "kind", "index", "-created_at", "pk")


def segment_picker_groups(*, project_id: int) -> list[dict]:
    """What the experience form's segment picker lists: one group per finished clustering run
    (newest first), then rule segments, then lookalikes. Each group: label, run id, segments."""
    rows = (
        Segment.objects.filter(project_id=project_id)
        .exclude(kind=SegmentKind.BEHAVIOR, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED])
        .select_related("run")
        .order_by(F("run_id").desc(nulls_last=True), "index", "name")
    )
    runs: dict[int, dict] = {}
    rules: list[Segment] = []
    lookalikes: list[Segment] = []
    for segment in rows:
        if segment.kind == SegmentKind.BEHAVIOR and segment.run is not None:
            group = runs.setdefault(
                segment.run_id,
                {"kind": "run", "run": segment.run, "label": f"Clustering run #{segment.run_id}", "segments": []},
            )
            group["segments"].append(segment)
        elif segment.kind == SegmentKind.RULE:
            rules.append(segment)
        elif segment.kind == SegmentKind.LOOKALIKE:
            lookalikes.append(segment)
    groups = list(runs.values())
    if groups:
        groups[0]["label"] += " (newest)"
    if rules:
        groups.append({"kind": "rule", "run": None, "label": "Rule segments", "segments": rules})
    if lookalikes:
        groups.append({"kind": "lookalike", "run": None, "label": "Lookalikes", "segments": lookalikes})
    return groups


def segment_keys_untargetable(*, project_id: int, keys: list[str]) -> list[str]:
    """The keys among `keys` that name no segment decide can target (unknown, or of an unfinished run)."""
    known = set(
        Segment.objects.filter(project_id=project_id, key__in=keys)
        .exclude(kind=SegmentKind.BEHAVIOR, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED])
        .values_list("key", flat=True)
    )
    return [key for key in keys if key not in known]


def intent_keys_unknown(*, project_id: int, keys: list[str]) -> list[str]:
    """The keys among `keys` that name none of the project's intents."""
    known = set(Intent.objects.filter(project_id=project_id, key__in=keys).values_list("key", flat=True))
    return [key for key in keys if key not in known]


def intents_for_project(*, project_id: int):
    """The project's intents by name."""
    return Intent.objects.filter(project_id=project_id).order_by("name")


def intent_by_key(*, project_id: int, key: str) -> Intent | None:
    return Intent.objects.filter(project_id=project_id, key=key).first()


def intent_people_above(*, intent: Intent) -> int:
    """People whose stored score on this intent is at or above its threshold."""
    return ProfileIntent.objects.filter(intent=intent, score__gte=intent.threshold).count()


def segment_key_run(key: str) -> int | None:
    """The clustering run a behavior segment key belongs to ("b12.3" → 12), also after the run was deleted."""
    return run_of_key(key)


def run_for_project(*, project_id: int, run_id: int) -> ClusteringRun | None:
    if not 0 < run_id < 2**31:  # "run:99999999999999999999" names no run; PostgreSQL could not compare it
        return None
    return ClusteringRun.objects.filter(project_id=project_id, pk=run_id).first()


def runs_done(*, project_id: int, limit: int = 50) -> list[ClusteringRun]:
    """Finished (kept) runs, newest first: the runs exposures record a segment of, and an experience may be
    migrated to."""
    rows = ClusteringRun.objects.filter(project_id=project_id, status=RunStatus.DONE).order_by("-created_at", "-pk")
    return list(rows[:limit])


def segments_by_keys(*, project_id: int, keys: list[str]) -> dict[str, Segment]:
    return {s.key: s for s in Segment.objects.filter(project_id=project_id, key__in=keys).select_related("run")}


def segments_overlap(*, project_id: int, old_keys: list[str], run_id: int) -> dict[str, list[dict]]:
    """For each old segment, every segment of run `run_id` ranked by member overlap, best first.

    Overlap is the Jaccard index of the two current memberships (people in both ÷ people in
    either); `share_of_old` is the part of the old segment's people found in the new one. Computed
    in one query over the membership table; a new segment sharing nobody is listed with 0.
    """
    old = {s.key: s for s in Segment.objects.filter(project_id=project_id, key__in=old_keys)}
    new = list(Segment.objects.filter(project_id=project_id, run_id=run_id).order_by("index"))
    if not new:
        return {key: [] for key in old_keys}
    table = SegmentMembership._meta.db_table
    sql = f"""
        WITH a AS (SELECT DISTINCT segment_id, profile_id FROM {table} WHERE segment_id = ANY(%s)),
             b AS (SELECT DISTINCT segment_id, profile_id FROM {table} WHERE segment_id = ANY(%s)),
             sa AS (SELECT segment_id, count(*) AS n FROM a GROUP BY segment_id),
             sb AS (SELECT segment_id, count(*) AS n FROM b GROUP BY segment_id),
             both_ AS (SELECT a.segment_id AS old_id, b.segment_id AS new_id, count(*) AS n
                       FROM a JOIN b USING (profile_id) GROUP BY a.segment_id, b.segment_id)
        SELECT sa.segment_id, sb.segment_id, coalesce(both_.n, 0), sa.n, sb.n
        FROM sa CROSS JOIN sb
        LEFT JOIN both_ ON both_.old_id = sa.segment_id AND both_.new_id = sb.segment_id
    """
    counts: dict[tuple[int, int], tuple[int, int, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [[s.pk for s in old.values()], [s.pk for s in new]])
        for old_id, new_id, both, n_old, n_new in cursor.fetchall():
            counts[(old_id, new_id)] = (both, n_old, n_new)
    out: dict[str, list[dict]] = {}
    for key in old_keys:
        segment = old.get(key)
        ranked = []
        for candidate in new:
            both, n_old, n_new = counts.get((segment.pk, candidate.pk), (0, 0, 0)) if segment else (0, 0, 0)
            union = n_old + n_new - both
            ranked.append(
                {
                    "segment": candidate,
                    "key": candidate.key,
                    "both": both,
                    "jaccard": both / union if union else 0.0,
                    "share_of_old": both / n_old if n_old else 0.0,
                }
            )
        ranked.sort(key=lambda r: (-r["jaccard"], r["segment"].index))
        out[key] = ranked
    return out


def run_map_points(*, run: ClusteringRun) -> list[tuple[float, float, int]]:
    """The run's 2-D map sample as (x, y, segment index), without anyone who may not be profiled now."""
    rows = list(MapPoint.objects.filter(run=run).order_by("pk").values_list("profile_id", "x", "y", "index"))
    blocked = people.profiles_not_profilable(project_id=run.project_id, profile_ids=[r[0] for r in rows])
    return [(x, y, index) for profile_id, x, y, index in rows if profile_id not in blocked]


def embedding_coverage(*, project_id: int) -> dict:
    """Who the latest embedding covers: its window, minimum of events, and who was left out and why,
    with the sentence the Segments page shows. Empty before the first fit."""
    latest = EmbedderVersion.objects.filter(project_id=project_id).order_by("-version").first()
    coverage = dict(latest.coverage) if latest is not None else {}
    return coverage | {"sentence": _coverage_sentence(coverage)} if coverage else {}


def _coverage_sentence(coverage: dict) -> str:
    """What the Segments page says about who was embedded and who was left out, and why."""
    if not coverage:
        return ""
    left = coverage["left_out"]
    parts = [
        f"{coverage['eligible']:,} of {coverage['people_with_behavior']:,} people with behavior are segmented"
        f" (their latest {coverage['last_events']:,} events in the last {coverage['window_days']:,} days)."
    ]
    if left["fewer_events"]:
        parts.append(f"{left['fewer_events']:,} people left out: fewer than {coverage['min_events']} events.")
    if left["outside_window"]:
        parts.append(
            f"{left['outside_window']:,} people left out: no events in the last {coverage['window_days']:,} days."
        )
    return " ".join(parts)


def score_runs(*, project_id: int) -> list:
    """The project's score retrains, newest first."""
    return list(ScoreRun.objects.filter(project_id=project_id).order_by("-created_at")[:50])


def scores_count(*, project_id: int) -> int:
    """How many people have predictive scores now."""
    return ProfileScore.objects.filter(project_id=project_id).count()


def scores_exist(*, project_id: int) -> bool:
    """Whether anyone in the project has predictive scores (so decide may have recorded them at exposure)."""
    return ProfileScore.objects.filter(project_id=project_id).exists()
