"""Reads for lift reports: sufficient statistics per (segment, arm), aggregated in PostgreSQL.

One GROUP BY over the exposure table (whose outcomes the drain keeps current) gives, per segment
and arm: users, converted users, revenue sum and sum of squares, and the CUPED covariate sums.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection

from experiments.segmentation import Segmentation
from experiments.stats import ArmStats, SegmentStats

_SUMS = """
    count(*) AS n,
    count(*) FILTER (WHERE x.converted) AS conversions,
    coalesce(sum(x.revenue::float8), 0) AS sum_y,
    coalesce(sum(x.revenue::float8 * x.revenue::float8), 0) AS sum_y2,
    coalesce(sum(x.pre_activity::float8), 0) AS sum_x,
    coalesce(sum(x.pre_activity::float8 * x.pre_activity), 0) AS sum_x2,
    coalesce(sum(x.pre_activity * x.revenue::float8), 0) AS sum_xy
"""
# float8 arithmetic: summing numeric is several times slower, and cents survive float8 exactly
# far beyond any realistic revenue total.


# What the report reads of an exposure: the global population sorts every row by person, and
# carrying only these through the sort instead of whole rows takes a third off its time.
_COLUMNS = "profile_id, variant_key, arm, segment, exposed_at, converted, revenue, pre_activity"


@dataclass(frozen=True)
class Population:
    """Which exposures are compared, and which of them count as treated."""

    source: str  # FROM clause producing rows aliased x
    params: list  # parameters of source
    treated: str  # boolean SQL expression over x
    treated_params: tuple = ()


def lift_population(
    *,
    project_id: int,
    experience_key: str,
    comparison: str,
    start: datetime,
    end: datetime,
    control_key: str = "",
) -> Population:
    if not experience_key:
        # Everyone's first exposure anywhere: personalized vs the global holdout.
        source = (
            f"(SELECT DISTINCT ON (profile_id) {_COLUMNS} FROM personalization_exposure"
            " WHERE project_id = %s AND arm IN ('variant', 'holdout_global') AND exposed_at >= %s AND exposed_at < %s"
            " ORDER BY profile_id, exposed_at) x"
        )
        return Population(source, [project_id, start, end], "x.arm = 'variant'")
    if comparison == "control":
        source = (
            "(SELECT * FROM personalization_exposure WHERE project_id = %s AND experience_key = %s"
            " AND arm = 'variant' AND exposed_at >= %s AND exposed_at < %s) x"
        )
        return Population(source, [project_id, experience_key, start, end], "x.variant_key <> %s", (control_key,))
    source = (
        "(SELECT * FROM personalization_exposure WHERE project_id = %s AND experience_key = %s"
        " AND arm IN ('variant', 'holdout_experience') AND exposed_at >= %s AND exposed_at < %s) x"
    )
    return Population(source, [project_id, experience_key, start, end], "x.arm = 'variant'")


def _arm(row) -> ArmStats:
    n, conversions, sum_y, sum_y2, sum_x, sum_x2, sum_xy = row
    return ArmStats(n=n, conversions=conversions, sum_y=sum_y, sum_y2=sum_y2, sum_x=sum_x, sum_x2=sum_x2, sum_xy=sum_xy)


_EMPTY = (0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)

# The UTC day number of an exposure. Written exactly as in the exposure_day_stats statistics object
# (personalization migration 0007), which tells the planner it has a handful of values; float8
# arithmetic, because extract() returns numeric and costs twice as much per row.
EXPOSURE_DAY = "floor(date_part('epoch', x.exposed_at) / 86400)"


def lift_cells_sql(*, population: Population, segmentation: Segmentation) -> tuple[str, list]:
    join, expr, expr_params = segmentation.sql()
    sql = (
        f"SELECT {expr} AS seg, {EXPOSURE_DAY} AS day,"
        f" {population.treated} AS treated, {_SUMS} FROM {population.source} {join} GROUP BY 1, 2, 3"
    )
    return sql, [*expr_params, *population.treated_params, *population.params]


def lift_cells(*, population: Population, segmentation: Segmentation) -> list[tuple[str, int, bool, ArmStats]]:
    """(segment, day number, treated, sums) cells from ONE parallel scan; segments and days are
    roll-ups of these cells (sufficient statistics add up), done in Python on a few hundred rows."""
    sql, params = lift_cells_sql(population=population, segmentation=segmentation)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [(seg, int(day), bool(treated), _arm(sums)) for seg, day, treated, *sums in rows]


def _rollup(cells, key_of) -> dict:
    totals: dict = {}
    for cell in cells:
        key = (key_of(cell), cell[2])
        totals[key] = totals[key] + cell[3] if key in totals else cell[3]
    return totals


def lift_segment_stats(*, cells) -> list[SegmentStats]:
    """One SegmentStats per segment, largest first."""
    totals = _rollup(cells, lambda cell: cell[0])
    empty = _arm(_EMPTY)
    names = {name for name, _ in totals}
    stats = [
        SegmentStats(name=name, treatment=totals.get((name, True), empty), holdout=totals.get((name, False), empty))
        for name in names
    ]
    return sorted(stats, key=lambda s: (-(s.treatment.n + s.holdout.n), s.name))


def lift_daily_stats(*, cells) -> list[tuple[datetime, ArmStats, ArmStats]]:
    """(day, treatment, holdout) per UTC day of first exposure, oldest first."""
    totals = _rollup(cells, lambda cell: cell[1])
    empty = _arm(_EMPTY)
    days = sorted({day for day, _ in totals})
    return [
        (datetime.fromtimestamp(day * 86400, tz=UTC), totals.get((day, True), empty), totals.get((day, False), empty))
        for day in days
    ]


def lift_reports_latest(*, project_id: int, limit: int = 20):
    from experiments.models import LiftReport

    return LiftReport.objects.filter(project_id=project_id).order_by("-created_at")[:limit]


def lift_report_latest(
    *, project_id: int, experience_key: str, segment_by: str, comparison: str, correction: str, days: int
):
    """The newest report with these settings (done, or still being computed)."""
    from datetime import timedelta

    from experiments.models import LiftReport

    candidates = LiftReport.objects.filter(
        project_id=project_id,
        experience_key=experience_key,
        segment_by=segment_by,
        comparison=comparison,
        correction=correction,
    ).order_by("-created_at")
    for report in candidates[:10]:
        if abs((report.end - report.start) - timedelta(days=days)) < timedelta(minutes=1):
            return report
    return None


def lift_experience_keys(*, project_id: int) -> list[str]:
    """Every experience with exposures, including campaigns assigned outside Kairos."""
    from personalization.models import Experience

    configured = set(Experience.objects.filter(project_id=project_id).values_list("key", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT experience_key FROM personalization_exposure WHERE project_id = %s", [project_id]
        )
        exposed = {row[0] for row in cursor.fetchall()}
    return sorted(configured | exposed)


def lift_segmentation_choices(*, project_id: int) -> list[tuple[str, str]]:
    """(value, label) of the segmentations that make sense for this project's data."""
    choices = [("exposure:segment", "Segment at exposure (per-segment bandits)")]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT k FROM (SELECT jsonb_object_keys(attributes) AS k FROM personalization_profile"
            " WHERE project_id = %s ORDER BY id DESC LIMIT 2000) s ORDER BY k",
            [project_id],
        )
        choices += [(f"attribute:{key}", f"Profile attribute: {key}") for (key,) in cursor.fetchall()]
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM personalization_profile WHERE project_id = %s AND demo_intent <> '')",
            [project_id],
        )
        if cursor.fetchone()[0]:
            choices.append(("demo:intent", "Planted intent (demo data)"))
    return choices
