"""Exposures as lift reports read them: the experiments app names no table of this one."""

from datetime import datetime

from django.db.models import Max, Min

from personalization.ingest.stored_version import stored_version_read
from personalization.models import (
    Arm,
    Experience,
    Exposure,
)
from personalization.segment_keys import INTENT_SOURCE_THRESHOLD

# Exposures as lift reports read them (the experiments app names no table of this one).

MISSING_SEGMENT = "(none)"


# Behavior breakdowns: the exposure recorded its segments and none matched. Parentheses keep both
# apart from any segment key (slugs) or run key ("b12.3").
NO_SEGMENT = "(no segment)"


# What the report reads of an exposure: the global population sorts every row by person, and
# carrying only these through the sort instead of whole rows takes a third off its time.
_LIFT_COLUMNS = "profile_id, experience_key, variant_key, arm, segment, exposed_at, converted, revenue, pre_activity"


# The UTC day number of an exposure. Written exactly as in the exposure_day_stats statistics object
# (migration 0007), which tells the planner it has a handful of values; float8 arithmetic, because
# extract() returns numeric and costs twice as much per row.
_EXPOSURE_DAY = "floor(date_part('epoch', x.exposed_at) / 86400)"


def _lift_population(
    *, project_id, experience_key, comparison, control_key, start, end, extra=""
) -> tuple[str, list, str, list]:
    """(FROM clause of rows aliased x, its parameters, the SQL "treated" test, its parameters).
    `extra`: one more column the rows carry (behavior_segments, live) for the breakdown."""
    if not experience_key:
        # Everyone's first exposure anywhere: personalized vs the global holdout. Ties (one decide
        # exposing several experiences at once) go to the first key, the same rule in every arm.
        columns = _LIFT_COLUMNS + (f", {extra}" if extra else "")
        source = (
            f"(SELECT DISTINCT ON (profile_id) {columns} FROM personalization_exposure"
            " WHERE project_id = %s AND arm IN ('variant', 'holdout_global') AND exposed_at >= %s AND exposed_at < %s"
            " ORDER BY profile_id, exposed_at, experience_key) x"
        )
        return source, [project_id, start, end], "x.arm = 'variant'", []
    if comparison == "control":
        source = (
            "(SELECT * FROM personalization_exposure WHERE project_id = %s AND experience_key = %s"
            " AND arm = 'variant' AND exposed_at >= %s AND exposed_at < %s) x"
        )
        return source, [project_id, experience_key, start, end], "x.variant_key <> %s", [control_key]
    source = (
        "(SELECT * FROM personalization_exposure WHERE project_id = %s AND experience_key = %s"
        " AND arm IN ('variant', 'holdout_experience') AND exposed_at >= %s AND exposed_at < %s) x"
    )
    return source, [project_id, experience_key, start, end], "x.arm = 'variant'", []


def cells_source(*, breakdown_kind: str, breakdown_name: str, also: str = "", **population) -> tuple[tuple, tuple]:
    """((JOIN, its parameters, breakdown value SQL, its parameters), (FROM, its parameters, treated
    test, its parameters)) of a report's rows; `also`: more columns the global population carries.

    Breakdown kinds: "exposure" (the segment recorded at exposure), "attribute" (a profile
    attribute named `breakdown_name`), and two over the behavior segments recorded at exposure:
    "segs_prefix" (the key starting with `breakdown_name`, a clustering run's prefix: a person is
    in one segment of a run) and "segs_key" (in the segment keyed `breakdown_name`, or not); and
    "live", over the live state recorded at exposure (`breakdown_name`: stage, first_touch, tenure);
    and "intent", yes or no by the visitor's score on the intent `breakdown_name` at exposure; and
    "exposure_day", the day of exposure in the time zone `breakdown_name`."""
    join, join_params, expr, expr_params, extra = breakdown_sql(
        breakdown_kind=breakdown_kind, breakdown_name=breakdown_name
    )
    columns = [column for part in (extra, also) for column in part.split(", ") if column]
    extra = ", ".join(dict.fromkeys(columns))  # a column asked for twice is carried once
    return (join, join_params, expr, expr_params), _lift_population(**population, extra=extra)


def breakdown_sql(*, breakdown_kind: str, breakdown_name: str) -> tuple[str, list, str, list, str]:
    """(JOIN clause, its parameters, the SQL value of the breakdown over rows aliased x, its
    parameters, the extra column the rows must carry) for a breakdown kind (cells_source)."""
    extras = {"segs_prefix": "behavior_segments", "segs_key": "behavior_segments", "live": "live", "intent": "live"}
    join, join_params = "", []
    if breakdown_kind == "exposure":
        expr, expr_params = f"coalesce(nullif(x.segment, ''), '{MISSING_SEGMENT}')", []
    elif breakdown_kind == "attribute":
        join = "JOIN personalization_profile p ON p.id = x.profile_id"
        expr, expr_params = f"coalesce(nullif(p.attributes ->> %s, ''), '{MISSING_SEGMENT}')", [breakdown_name]
    elif breakdown_kind == "segs_prefix":
        # A lateral join rather than a subquery in the SELECT list: PostgreSQL then memoizes it per
        # set of segments (people in the same segments share one). Per 1M exposures with 7,280
        # different sets: 0.44 s here, 1.40 s as a subquery, 0.93 s testing each of a run's 20 keys;
        # 1.04 s when every exposure has a set of its own (bench/lift.py's data).
        join = (
            "LEFT JOIN LATERAL (SELECT s FROM unnest(x.behavior_segments) s WHERE starts_with(s, %s) LIMIT 1) m ON true"
        )
        join_params = [breakdown_name]
        expr, expr_params = _behavior_expr("m.s"), []
    elif breakdown_kind == "segs_key":
        expr, expr_params = _behavior_expr("CASE WHEN %s = ANY(x.behavior_segments) THEN %s END"), [breakdown_name] * 2
    elif breakdown_kind == "exposure_day":
        # The calendar day of the (first) exposure in the project's time zone, `breakdown_name`.
        expr, expr_params = "to_char(x.exposed_at AT TIME ZONE %s, 'YYYY-MM-DD')", [breakdown_name]
    elif breakdown_kind == "live" and breakdown_name in _LIVE_EXPRESSIONS:
        expr, expr_params = _LIVE_EXPRESSIONS[breakdown_name], []
    elif breakdown_kind == "intent":
        expr, expr_params = _INTENT_EXPRESSION, [breakdown_name, INTENT_SOURCE_THRESHOLD, breakdown_name]
    else:
        raise ValueError(f"unknown breakdown kind {breakdown_kind!r}")
    return join, join_params, expr, expr_params, extras.get(breakdown_kind, "")


def _behavior_expr(found: str) -> str:
    """The segment an exposure is counted in: `found`, else NO_SEGMENT; MISSING_SEGMENT when the
    exposure recorded no segments (before they were kept)."""
    return f"CASE WHEN x.behavior_segments IS NULL THEN '{MISSING_SEGMENT}' ELSE coalesce({found}, '{NO_SEGMENT}') END"


def _live_expr(value: str) -> str:
    """The value of a live breakdown: `value` (SQL over x.live), NO_SEGMENT when the state did not
    know it, MISSING_SEGMENT when the exposure kept no live state (recorded before it was kept, or
    decide answered without Redis)."""
    return f"CASE WHEN x.live IS NULL THEN '{MISSING_SEGMENT}' ELSE coalesce({value}, '{NO_SEGMENT}') END"


# Tenure cohorts in whole days since first seen; the value is typed in JSON as a number only when
# decide wrote it (facts_record), so the cast never meets text.
TENURE_COHORTS = ("0 days", "1–7 days", "8–30 days", "31+ days")
_TENURE = (
    "CASE WHEN jsonb_typeof(x.live -> 'tenure_days') = 'number' THEN CASE"
    f" WHEN (x.live ->> 'tenure_days')::float8 < 1 THEN '{TENURE_COHORTS[0]}'"
    f" WHEN (x.live ->> 'tenure_days')::float8 < 8 THEN '{TENURE_COHORTS[1]}'"
    f" WHEN (x.live ->> 'tenure_days')::float8 < 31 THEN '{TENURE_COHORTS[2]}'"
    f" ELSE '{TENURE_COHORTS[3]}' END END"
)
# An intent at exposure: "yes" at or above the cut a per-segment bandit uses, "no" below, NO_SEGMENT when
# the visitor was not scored on it.
_INTENT_EXPRESSION = _live_expr(
    "CASE WHEN (x.live -> 'intents' ->> %s)::float8 >= %s THEN 'yes'"
    " WHEN x.live -> 'intents' ->> %s IS NOT NULL THEN 'no' END"
)
_LIVE_EXPRESSIONS = {
    "stage": _live_expr("nullif(x.live ->> 'stage', '')"),
    "first_touch": _live_expr("nullif(x.live ->> 'first_touch', '')"),
    "tenure": _live_expr(_TENURE),
    # Exposures recorded before decide kept the device have live state without the key: they are the
    # "recorded before" row too, not "not known" (a JSON null is decide not knowing it).
    "device": (
        f"CASE WHEN x.live -> 'device' IS NULL THEN '{MISSING_SEGMENT}'"
        f" ELSE coalesce(nullif(x.live ->> 'device', ''), '{NO_SEGMENT}') END"
    ),
}


def exposure_range(*, project_id: int, experience_key: str) -> tuple[datetime, datetime] | None:
    """(first, last) exposure time of an experience, or of every experience when the key is empty (the
    global holdout report's population); None when there is none. The experience's index serves it."""
    rows = Exposure.objects.filter(project_id=project_id)
    rows = (
        rows.filter(experience_key=experience_key)
        if experience_key
        else rows.filter(arm__in=[Arm.VARIANT, Arm.HOLDOUT_GLOBAL])
    )
    found = rows.aggregate(first=Min("exposed_at"), last=Max("exposed_at"))
    return None if found["first"] is None else (found["first"], found["last"])


def stored_version_for_report(*, project_id: int, experience_key: str) -> str:
    """The version of what a report of this experience reads (stored_version): its exposures, its goal
    events and purchases (revenue). The global holdout report, and an experience Kairos does not know
    the goal of, read everything."""
    experience = (
        Experience.objects.filter(project_id=project_id, key=experience_key).only("goal_event").first()
        if experience_key
        else None
    )
    fields = ["all"] if experience is None else [f"x:{experience_key}", f"e:{experience.goal_event}", "e:purchase"]
    return stored_version_read(project_id=project_id, fields=fields)


def exposure_experience_keys(*, project_id: int) -> set[str]:
    """Every experience key with exposures, configured in Kairos or not."""
    return set(Exposure.objects.filter(project_id=project_id).values_list("experience_key", flat=True).distinct())
