"""Reads for lift reports: sufficient statistics per (segment, arm), aggregated in PostgreSQL.

One GROUP BY over the exposure table (whose outcomes the drain keeps current) gives, per segment
and arm: users, converted users, revenue sum and sum of squares, and the CUPED covariate sums; the
same scan, joined to the events around each exposure, gives every chosen metric's moments. The
SQL itself is a `personalization` selector: this app names none of that app's tables.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from experiments.breakdown import LIVE_FIELDS, MISSING_LABEL, NO_SEGMENT, Breakdown, BreakdownError
from experiments.metrics_stats import Moments
from experiments.models import ExperienceMetrics, LiftReport, Metric
from experiments.stats import ArmStats, SegmentStats
from experiments.survival import SurvivalCurve, kaplan_meier
from personalization import selectors as personalization_selectors
from personalization.segment_keys import INTENT_SOURCE_THRESHOLD, run_prefix, run_source
from segments import selectors as segments_selectors


@dataclass(frozen=True)
class Population:
    """Which exposures are compared, and which of them count as treated."""

    project_id: int
    experience_key: str
    comparison: str
    start: datetime
    end: datetime
    control_key: str = ""
    time_zone: str = "UTC"  # the project's: days of exposure are its calendar days


def lift_population(
    *,
    project_id: int,
    experience_key: str,
    comparison: str,
    start: datetime,
    end: datetime,
    control_key: str = "",
    time_zone: str = "UTC",
) -> Population:
    return Population(project_id, experience_key, comparison, start, end, control_key, time_zone)


def _arm(row) -> ArmStats:
    n, conversions, sum_y, sum_y2, sum_x, sum_x2, sum_xy = row
    return ArmStats(n=n, conversions=conversions, sum_y=sum_y, sum_y2=sum_y2, sum_x=sum_x, sum_x2=sum_x2, sum_xy=sum_xy)


_EMPTY = (0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _run_of(project_id: int, breakdown: Breakdown):
    run = segments_selectors.run_done_by_id(project_id=project_id, run_id=int(breakdown.name))
    if run is None:
        raise BreakdownError(
            f"segment_by=run:{breakdown.name}: there is no finished clustering run #{breakdown.name} in this project;"
            " pick a run listed under “by”, or run a clustering on the Segments page"
        )
    return run


def _cells_arguments(population: Population, breakdown: Breakdown) -> dict:
    kind, name = breakdown.kind, breakdown.name
    if kind == "run":  # the run's segment keys share its prefix
        kind, name = "segs_prefix", run_prefix(_run_of(population.project_id, breakdown).pk)
    elif kind == "segment":
        kind = "segs_key"
    elif kind == "exposure" and name == "day":
        kind, name = "exposure_day", population.time_zone
    return {
        "project_id": population.project_id,
        "experience_key": population.experience_key,
        "comparison": population.comparison,
        "start": population.start,
        "end": population.end,
        "control_key": population.control_key,
        "breakdown_kind": kind,
        "breakdown_name": name,
    }


def lift_cells_sql(*, population: Population, breakdown: Breakdown, specs: list[dict] = (), as_of=None):
    """(SQL, parameters, columns per block) of the one scan lift_report_cells runs."""
    return personalization_selectors.exposure_metric_cells_sql(
        **_cells_arguments(population, breakdown), **_metrics_arguments(population, specs), as_of=as_of
    )


def _metrics_arguments(population: Population, specs) -> dict:
    """The metrics of a report's scan, with CUPAC's covariate only where decide can have recorded
    scores: each metric's extra column costs the 5-metric report about a fifth more (bench/lift.py:
    4.92 → 5.80 s at 1M exposures)."""
    predicted = bool(specs) and segments_selectors.scores_exist(project_id=population.project_id)
    return {"metrics": list(specs), "outcomes": True, "predicted": predicted}


def _moments(values, widths: list[int]) -> list[Moments]:
    """One Moments per block of a row's values (n, the sums, the upper triangle of the products)."""
    moments, at = [], 0
    for width in widths:
        n, sums = values[at], values[at + 1 : at + 1 + width]
        flat = iter(values[at + 1 + width : at + 1 + width + width * (width + 1) // 2])
        matrix = [[0.0] * width for _ in range(width)]
        for a in range(width):
            for b in range(a, width):
                matrix[a][b] = matrix[b][a] = next(flat)
        moments.append(Moments(n, tuple(sums), tuple(map(tuple, matrix))))
        at += 1 + width + width * (width + 1) // 2
    return moments


def _outcomes_arm(outcomes: Moments) -> ArmStats:
    """ArmStats of the OUTCOMES block (converted, revenue, pre_activity): its count, sums and products.
    Converted is 0 or 1, so its float8 sum is an exact whole number."""
    (_, sum_y, sum_x), products = outcomes.sums, outcomes.products
    return ArmStats(
        n=outcomes.n,
        conversions=round(outcomes.sums[0]),
        sum_y=sum_y,
        sum_y2=products[1][1],
        sum_x=sum_x,
        sum_x2=products[2][2],
        sum_xy=products[1][2],
    )


def lift_report_cells(
    *, population: Population, breakdown: Breakdown, specs: list[dict], as_of: datetime
) -> tuple[list[tuple[str, int, bool, ArmStats]], list[tuple[str, int, bool, list[Moments]]]]:
    """(conversion cells, metric cells) of a report, both (segment, day number, treated, ...) from ONE
    scan of the exposures (joined to the events around them when a metric needs them): the exposure's
    own outcomes as ArmStats, and one Moments per metric of `specs`. Segments and days are roll-ups of
    these cells (sufficient statistics add up), done in Python on a few hundred rows. People without
    a value for the breakdown stay in (MISSING_LABEL): the caller counts them, then may drop them."""
    rows, widths = personalization_selectors.exposure_metric_cells(
        **_cells_arguments(population, breakdown), **_metrics_arguments(population, specs), as_of=as_of
    )
    cells, metric_cells = [], []
    for seg, day, treated, *values in rows:
        outcomes, *moments = _moments(values, widths)
        cells.append((seg, int(day), bool(treated), _outcomes_arm(outcomes)))
        metric_cells.append((seg, int(day), bool(treated), moments))
    return cells, metric_cells


def lift_conversion_curves(
    *, population: Population, spec: dict, as_of: datetime
) -> dict[bool, tuple[SurvivalCurve, int]]:
    """Per arm (treated or not): the Kaplan-Meier curve of a time-to-conversion metric and its users,
    from hourly counts aggregated in PostgreSQL (people not converted yet count for the time watched)."""
    rows = personalization_selectors.exposure_conversion_times(
        project_id=population.project_id,
        experience_key=population.experience_key,
        comparison=population.comparison,
        start=population.start,
        end=population.end,
        control_key=population.control_key,
        metric=spec,
        as_of=as_of,
    )
    curves = {}
    for arm in (True, False):
        mine = [row for row in rows if row[0] is arm]
        curve = kaplan_meier(
            times=[row[1] for row in mine], events=[row[2] for row in mine], censored=[row[3] for row in mine]
        )
        curves[arm] = (curve, sum(row[2] + row[3] for row in mine))
    return curves


def lift_cells(
    *, population: Population, breakdown: Breakdown, keep_missing: bool = False
) -> list[tuple[str, int, bool, ArmStats]]:
    """The conversion cells alone (lift_report_cells without metrics: the plain parallel GROUP BY).
    With `exclude_missing`, people without a value are left out (unless `keep_missing`)."""
    cells, _ = lift_report_cells(population=population, breakdown=breakdown, specs=[], as_of=population.end)
    if breakdown.exclude_missing and not keep_missing:
        cells = lift_cells_without_missing(cells=cells)
    return cells


def lift_metric_cells(
    *, population: Population, breakdown: Breakdown, specs: list[dict], as_of: datetime
) -> list[tuple[str, int, bool, list[Moments]]]:
    """The metric cells alone (lift_report_cells), without people the breakdown excludes."""
    _, cells = lift_report_cells(population=population, breakdown=breakdown, specs=specs, as_of=as_of)
    if breakdown.exclude_missing:
        cells = lift_cells_without_missing(cells=cells)
    return cells


def lift_cells_without_missing(*, cells):
    return [cell for cell in cells if cell[0] != MISSING_LABEL]


def lift_missing_count(*, cells) -> int:
    """People in the cells without a value for the breakdown (MISSING_LABEL)."""
    return sum(cell[3].n for cell in cells if cell[0] == MISSING_LABEL)


def lift_segment_labels(*, project_id: int, breakdown: Breakdown) -> dict[str, str]:
    """What a report shows for each value of a behavior breakdown: the names the marketer gave its
    segments, and words for "in none" and "not recorded"; for a live breakdown the words only (its
    values are stages, channels, cohorts). Empty for other breakdowns (their values are their names)."""
    if breakdown.kind == "live":
        return {NO_SEGMENT: "Not known at exposure", MISSING_LABEL: "Recorded before live state was kept"}
    if breakdown.kind == "intent":
        return {
            "yes": f"{breakdown.name}: score {INTENT_SOURCE_THRESHOLD:g} or more",
            "no": f"{breakdown.name}: below {INTENT_SOURCE_THRESHOLD:g}",
            NO_SEGMENT: "Not scored at exposure",
            MISSING_LABEL: "Recorded before live state was kept",
        }
    if breakdown.kind == "run":
        names = {s.key: s.name for s in segments_selectors.run_segments(run=_run_of(project_id, breakdown))}
        outside = "No segment"
    elif breakdown.kind == "segment":
        known = segments_selectors.segment_names(project_id=project_id)
        if breakdown.name not in known:
            raise BreakdownError(
                f"segment_by=segment:{breakdown.name}: this project has no segment with that key; pick one listed"
                " under “by”, or save a rule or lookalike segment on the Segments page"
            )
        names = {breakdown.name: known[breakdown.name]}
        outside = f"Not in {known[breakdown.name]}"
    else:
        return {}
    return {**names, NO_SEGMENT: outside, MISSING_LABEL: "Recorded before segments were kept"}


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
    span: str,
    exclude_missing: bool = False,
):
    """The newest report with these settings (done, or still being computed)."""
    return (
        LiftReport.objects.filter(
            project_id=project_id,
            experience_key=experience_key,
            segment_by=segment_by,
            comparison=comparison,
            correction=correction,
            exclude_missing=exclude_missing,
            span=span,
        )
        .order_by("-created_at")
        .first()
    )


def lift_headline(*, project_id: int) -> str:
    """The first sentence of the newest finished global-holdout lift report, or "" (the Overview's
    headline: experiments registers this as personalization's `lift_headline` hook)."""
    report = lift_report_latest(
        project_id=project_id,
        experience_key="",
        segment_by="exposure:segment",
        comparison="holdout",
        correction="bh",
        span="days:14",  # the global holdout report the Lift page opens on
    )
    if report is None or not report.result or report.result.get("empty"):
        return ""
    return (report.result.get("sentences") or [""])[0]


def lift_experience_keys(*, project_id: int) -> list[str]:
    """Every experience with exposures, configured (served or external) or not."""
    project = personalization_selectors.project_by_id(project_id=project_id)
    configured = {e.key for e in personalization_selectors.experiences_for_project(project=project)}
    return sorted(configured | personalization_selectors.exposure_experience_keys(project_id=project_id))


def lift_segmentation_choices(*, project_id: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """The breakdowns that make sense for this project's data, in groups: (group label, [(value,
    label)]); the first group has no label. Behavior segments: one choice per kept clustering run,
    one per rule or lookalike segment (people may be in several, so each is "in it or not")."""
    general = [("exposure:segment", "Segment at exposure"), ("exposure:day", "Day of first exposure")]
    live = [(f"live:{name}", label[0].upper() + label[1:]) for name, label in LIVE_FIELDS.items()]
    runs = [
        (run_source(run.pk), f"Behavior segments — run #{run.pk} (k={run.k})")
        for run in segments_selectors.runs_done(project_id=project_id)
    ]
    others = [
        (f"segment:{s.key}", f"{s.get_kind_display()}: {s.name}")
        for s in segments_selectors.segments_rule_and_lookalike(project_id=project_id)
    ]
    intents = [
        (f"intent:{i.key}", f"Intent: {i.name} ({INTENT_SOURCE_THRESHOLD:g} or more)")
        for i in segments_selectors.intents_for_project(project_id=project_id)
    ]
    names = personalization_selectors.profile_attribute_names(project_id=project_id)
    attributes = [(f"attribute:{name}", f"Profile attribute: {name}") for name in names]
    groups = [
        ("", general),
        ("Live state at exposure", live),
        ("Intents at exposure", intents),
        ("Behavior segments", runs),
        ("Rule and lookalike segments", others),
    ]
    return [group for group in [*groups, ("Profile attributes", attributes)] if group[1]]


# With no choice saved, a report shows today's conversion as primary, revenue and events per user
# beside it, and watches 30-day return as a guardrail (what the marketers asked for).
DEFAULT_CHOICE = {"primary": "conversion", "secondary": ["revenue", "events"], "guardrails": ["return-30d"]}


def metrics_for_project(*, project_id: int):
    return Metric.objects.filter(project_id=project_id).order_by("pk")


def metric_by_key(*, project_id: int, key: str) -> Metric | None:
    return Metric.objects.filter(project_id=project_id, key=key).first()


def experience_metrics_choice(*, project_id: int, experience_key: str) -> dict[str, list[str] | str]:
    """{"primary": key, "secondary": [keys], "guardrails": [keys]} of a report: the saved choice, else
    DEFAULT_CHOICE (both limited to metrics that exist)."""
    existing = set(Metric.objects.filter(project_id=project_id).values_list("key", flat=True))
    chosen = (
        ExperienceMetrics.objects.filter(project_id=project_id, experience_key=experience_key)
        .select_related("primary")
        .prefetch_related("secondary", "guardrails")
        .first()
    )
    if chosen is None:
        choice = DEFAULT_CHOICE
    else:
        choice = {
            "primary": chosen.primary.key if chosen.primary else "",
            "secondary": sorted(m.key for m in chosen.secondary.all()),
            "guardrails": sorted(m.key for m in chosen.guardrails.all()),
        }
    return {
        "primary": choice["primary"] if choice["primary"] in existing else "",
        "secondary": [k for k in choice["secondary"] if k in existing],
        "guardrails": [k for k in choice["guardrails"] if k in existing],
    }
