"""Reads for lift reports: sufficient statistics per (segment, arm), aggregated in PostgreSQL.

One GROUP BY over the exposure table (whose outcomes the drain keeps current) gives, per segment
and arm: users, converted users, revenue sum and sum of squares, and the CUPED covariate sums. The
SQL itself is a `personalization` selector: this app names none of that app's tables.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from experiments.breakdown import MISSING_LABEL, Breakdown
from experiments.models import LiftReport
from experiments.stats import ArmStats, SegmentStats
from personalization import selectors as personalization_selectors


@dataclass(frozen=True)
class Population:
    """Which exposures are compared, and which of them count as treated."""

    project_id: int
    experience_key: str
    comparison: str
    start: datetime
    end: datetime
    control_key: str = ""


def lift_population(
    *,
    project_id: int,
    experience_key: str,
    comparison: str,
    start: datetime,
    end: datetime,
    control_key: str = "",
) -> Population:
    return Population(project_id, experience_key, comparison, start, end, control_key)


def _arm(row) -> ArmStats:
    n, conversions, sum_y, sum_y2, sum_x, sum_x2, sum_xy = row
    return ArmStats(n=n, conversions=conversions, sum_y=sum_y, sum_y2=sum_y2, sum_x=sum_x, sum_x2=sum_x2, sum_xy=sum_xy)


_EMPTY = (0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _cells_arguments(population: Population, breakdown: Breakdown) -> dict:
    return {
        "project_id": population.project_id,
        "experience_key": population.experience_key,
        "comparison": population.comparison,
        "start": population.start,
        "end": population.end,
        "control_key": population.control_key,
        "breakdown_kind": breakdown.kind,
        "breakdown_name": breakdown.name,
    }


def lift_cells_sql(*, population: Population, breakdown: Breakdown) -> tuple[str, list]:
    return personalization_selectors.exposure_lift_cells_sql(**_cells_arguments(population, breakdown))


def lift_cells(*, population: Population, breakdown: Breakdown) -> list[tuple[str, int, bool, ArmStats]]:
    """(segment, day number, treated, sums) cells from ONE parallel scan; segments and days are
    roll-ups of these cells (sufficient statistics add up), done in Python on a few hundred rows.
    With `exclude_missing`, people without a value are left out of everything."""
    rows = personalization_selectors.exposure_lift_cells(**_cells_arguments(population, breakdown))
    cells = [(seg, int(day), bool(treated), _arm(sums)) for seg, day, treated, *sums in rows]
    if breakdown.exclude_missing:
        cells = [cell for cell in cells if cell[0] != MISSING_LABEL]
    return cells


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
    return LiftReport.objects.filter(project_id=project_id).order_by("-created_at")[:limit]


def lift_report_latest(
    *,
    project_id: int,
    experience_key: str,
    segment_by: str,
    comparison: str,
    correction: str,
    days: int,
    exclude_missing: bool = False,
):
    """The newest report with these settings (done, or still being computed)."""
    candidates = LiftReport.objects.filter(
        project_id=project_id,
        experience_key=experience_key,
        segment_by=segment_by,
        comparison=comparison,
        correction=correction,
        exclude_missing=exclude_missing,
    ).order_by("-created_at")
    for report in candidates[:10]:
        if abs((report.end - report.start) - timedelta(days=days)) < timedelta(minutes=1):
            return report
    return None


def lift_experience_keys(*, project_id: int) -> list[str]:
    """Every experience with exposures, configured (served or external) or not."""
    project = personalization_selectors.project_by_id(project_id=project_id)
    configured = {e.key for e in personalization_selectors.experiences_for_project(project=project)}
    return sorted(configured | personalization_selectors.exposure_experience_keys(project_id=project_id))


def lift_segmentation_choices(*, project_id: int) -> list[tuple[str, str]]:
    """(value, label) of the breakdowns that make sense for this project's data."""
    choices = [("exposure:segment", "Segment at exposure")]
    names = personalization_selectors.profile_attribute_names(project_id=project_id)
    return choices + [(f"attribute:{name}", f"Profile attribute: {name}") for name in names]
