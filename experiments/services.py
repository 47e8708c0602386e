"""Lift reports: request (queued for a worker), compute (aggregate in PostgreSQL, then statistics).

The page and the REST API share one path: `lift_report_request` queues a report for a worker (the
API first reuses the newest one with the same settings while it is fresh); both poll its progress.
"""

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from experiments import metric_report, selectors, sentences, sequential, stats, survival
from experiments.breakdown import Breakdown
from experiments.errors import LiftInputError

# experience_metrics_set is re-exported: other apps (the demo) reach metrics through this module.
from experiments.metric_services import experience_metrics_set as experience_metrics_set
from experiments.metric_services import metric_defaults_ensure, metric_values_resume
from experiments.models import LiftReport, ReportStatus
from personalization import selectors as personalization_selectors

CORRECTIONS = ("bh", "holm")
COMPARISONS = ("holdout", "control")
SRM_THRESHOLD = 0.001  # the fixed-horizon check's default in stats.lift_report, so the two badges agree on "how sure"


def _expected_split(*, project, experience_key: str, comparison: str) -> tuple[float | None, str]:
    """(configured holdout share the sample ratio is checked against, or None; control variant key)."""
    if not experience_key:
        share = project.global_holdout_share
        return (share if 0 < share < 1 else None), ""
    experience = personalization_selectors.experience_for_project(project=project, key=experience_key)
    if experience is None:
        return None, ""  # exposures of a key that was never registered: nothing to check against
    variants = list(experience.variants.all())
    control = next((v for v in variants if v.is_control), None)
    control_key = control.key if control else ""
    if comparison == "control":
        total = sum(v.weight for v in variants)
        share = control.weight / total if control and total > 0 else 0.0
    else:
        share = experience.holdout_share
    return (share if 0 < share < 1 else None), control_key


def _no_split_sentence(experience_key: str, comparison: str) -> str:
    if not experience_key:
        return "No global holdout share is configured, so the sample ratio is not checked."
    where = "a control weight" if comparison == "control" else "a holdout share"
    return (
        f"No expected split is configured for {experience_key} ({where}), so the sample ratio is not checked: "
        "register the experience with its split to have assignment checked."
    )


DEFAULT_DAYS = 14  # the global holdout's default range, up to now
SPAN_EXPOSURES = "exposures"  # an experience's default: its own first to last exposure


def lift_span(
    *, experience_key: str, days: int | None = None, start: date | None = None, end: date | None = None
) -> str:
    """The range a report covers, as stored on it. Days count back from the time of asking; dates are
    whole UTC days, both included. Given neither, an experience covers its own exposures whenever they
    happened (imported history included) and the global holdout the last DEFAULT_DAYS days."""
    if (start is None) != (end is None):
        field = "end" if end is None else "start"
        raise LiftInputError(field, "give both start and end (dates, YYYY-MM-DD), or neither")
    if start is not None and end is not None:
        if days is not None:
            raise LiftInputError("days", "give either days or start and end, not both")
        if start > end:
            raise LiftInputError("start", f"is after end ({start} > {end}); swap them")
        return f"dates:{start.isoformat()}..{end.isoformat()}"
    if days is not None:
        if not 1 <= days <= 365:
            raise LiftInputError("days", "choose a range between 1 and 365 days, or give start and end dates")
        return f"days:{days}"
    return SPAN_EXPOSURES if experience_key else f"days:{DEFAULT_DAYS}"


def lift_span_range(*, project_id: int, experience_key: str, span: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of a span, as of `now`; an experience without exposures gets an empty range."""
    if span.startswith("days:"):
        return now - timedelta(days=int(span[5:])), now
    if span.startswith("dates:"):
        first, last = (date.fromisoformat(part) for part in span[6:].split(".."))
        return datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(days=1), time(), UTC)
    found = personalization_selectors.exposure_range(project_id=project_id, experience_key=experience_key)
    if found is None:
        return now, now
    return found[0], found[1] + timedelta(seconds=1)  # the range's end is excluded: keep the last exposure


def lift_params_validate(
    *, segment_by: str, comparison: str, correction: str, exclude_missing: bool = False
) -> Breakdown:
    try:
        breakdown = Breakdown.parse(segment_by, exclude_missing=exclude_missing)
    except ValueError as exc:
        raise LiftInputError("segment_by", str(exc)) from None
    if comparison not in COMPARISONS:
        raise LiftInputError("comparison", "use holdout (treatment vs holdout) or control (variants vs control)")
    if correction not in CORRECTIONS:
        raise LiftInputError("correction", "use bh (Benjamini–Hochberg) or holm")
    return breakdown


def lift_compute(
    *,
    project,
    experience_key: str,
    breakdown: Breakdown,
    start: datetime,
    end: datetime,
    comparison: str = "holdout",
    correction: str = "bh",
    progress: Callable[[int, str], None] | None = None,
) -> dict:
    """The whole report as JSON-able data: statistics, daily lift, plain sentences."""
    progress = progress or (lambda pct, label: None)
    share, control_key = _expected_split(project=project, experience_key=experience_key, comparison=comparison)
    population = selectors.lift_population(
        project_id=project.pk,
        experience_key=experience_key,
        comparison=comparison,
        start=start,
        end=end,
        control_key=control_key,
        time_zone=project.time_zone,
    )
    segment_labels = selectors.lift_segment_labels(project_id=project.pk, breakdown=breakdown)
    specs = _metric_specs(project=project, experience_key=experience_key)
    progress(10, "Aggregating exposures, outcomes and every metric in PostgreSQL")
    # One scan serves the conversion report and every metric (its cells carry both).
    as_of = timezone.now()
    cells, metric_cells = selectors.lift_report_cells(
        population=population, breakdown=breakdown, specs=specs, as_of=as_of
    )
    # Said, never silently dropped: how many people the breakdown has no value for (for behavior
    # segments: exposures recorded before exposures kept them).
    missing = {"users": selectors.lift_missing_count(cells=cells), "excluded": breakdown.exclude_missing}
    if breakdown.exclude_missing:
        cells = selectors.lift_cells_without_missing(cells=cells)
        metric_cells = selectors.lift_cells_without_missing(cells=metric_cells)
    segments = selectors.lift_segment_stats(cells=cells)
    daily = selectors.lift_daily_stats(cells=cells)
    progress(80, "Computing statistics")
    users_t = sum(s.treatment.n for s in segments)
    users_h = sum(s.holdout.n for s in segments)
    if not segments or users_t == 0 or users_h == 0:
        return {
            "empty": True,
            "users_treatment": users_t,
            "users_holdout": users_h,
            "message": _empty_message(project.pk, experience_key, comparison, users_t, users_h, (start, end)),
            "missing": missing,
        }
    report = stats.lift_report(segments=segments, holdout_share=share, correction=correction)
    labels = (
        {"treatment_label": "The variants", "holdout_label": "the control"}
        if comparison == "control" and experience_key
        else {}
    )
    cumulative = []
    running_t = running_h = None
    sequential_srm = _sequential_sample_ratio(daily=daily, holdout_share=share)
    for day, treatment, holdout in daily:
        running_t = treatment if running_t is None else running_t + treatment
        running_h = holdout if running_h is None else running_h + holdout
        if running_t.n and running_h.n:
            rate = stats.compare_rates(treatment=running_t, holdout=running_h)
            cumulative.append(
                {
                    "day": day.date().isoformat(),
                    "lift": rate.absolute_lift.value,
                    "ci_low": rate.absolute_lift.ci_low,
                    "ci_high": rate.absolute_lift.ci_high,
                    "users": running_t.n + running_h.n,
                }
            )
    metrics = _metric_sections(
        specs=specs,
        cells=metric_cells,
        order=[seg.name for seg in segments],
        correction=correction,
        labels=segment_labels,
        treatment_label=labels.get("treatment_label", "Personalization"),
    )
    for section in metrics:
        if section["kind"] == "time_to_conversion":
            spec = next(s for s in specs if s["key"] == section["key"])
            curves = selectors.lift_conversion_curves(population=population, spec=spec, as_of=as_of)
            section["survival"] = {
                arm: survival.survival_summary(curve, users=users)
                for arm, (curve, users) in (("treatment", curves[True]), ("holdout", curves[False]))
            }
    progress(95, "Writing the report")
    # Segment names say what they are; other values read as "plan = pro".
    # Live values are plain words ("comparing"), so they keep the breakdown's name beside them.
    named_values = segment_labels and breakdown.kind != "live"
    by_segment = str(breakdown) == "exposure:segment"
    labels["breakdown_label"] = "" if by_segment or named_values else breakdown.label
    unchecked = [] if share is not None else [_no_split_sentence(experience_key, comparison)]
    named = {"labels": segment_labels, **labels}
    return {
        "empty": False,
        "report": report.to_dict(),
        "sentences": unchecked + sentences.summary_sentences(report, metric_label="conversion", **named),
        "revenue_sentences": sentences.summary_sentences(
            report, metric_label="revenue per user", metric="revenue", **named
        ),
        "daily": stats.jsonable(cumulative),
        "holdout_share": share,
        "segment_label": breakdown.label,
        "segment_labels": segment_labels,
        "exclude_missing": breakdown.exclude_missing,
        "missing": missing,
        "metrics": metrics,
        "guardrails_worse": [m["key"] for m in metrics if m["role"] == "guardrail" and m["worse"]],
        "sequential_srm": sequential_srm,
        "as_of": as_of.isoformat(),  # the time the windows, retention and the waiting are measured to
    }


def _sequential_sample_ratio(*, daily, holdout_share: float | None) -> dict | None:
    """The always-valid sample ratio check read after every day of first exposure (None without a split).

    The fixed-horizon chi-square in the report is exact only when read once; this page is read daily,
    so the running check is the one that keeps its false alarms under the threshold however often.
    """
    if holdout_share is None or not daily:
        return None
    counts, treated, held = [], 0, 0
    for _, treatment, holdout in daily:
        treated, held = treated + treatment.n, held + holdout.n
        counts.append((treated, held))
    check = sequential.sequential_sample_ratio_looks(
        counts_per_look=counts, expected_shares=(1 - holdout_share, holdout_share), threshold=SRM_THRESHOLD
    )
    first_day = daily[check.first_mismatch_look][0].date().isoformat() if check.mismatch else None
    return {
        "p_value": check.p_value,
        "mismatch": check.mismatch,
        "looks": check.looks,
        "first_mismatch_day": first_day,
        "threshold": SRM_THRESHOLD,
        "sentence": sentences.sequential_srm_sentence(
            mismatch=check.mismatch, p_value=check.p_value, looks=check.looks, first_day=first_day
        ),
    }


def _metric_specs(*, project, experience_key: str) -> list[dict]:
    """Every metric chosen for this report (primary, secondary, guardrails), as specs with their role."""
    metric_defaults_ensure(project=project)
    choice = selectors.experience_metrics_choice(project_id=project.pk, experience_key=experience_key)
    by_key = {m.key: m for m in selectors.metrics_for_project(project_id=project.pk)}
    roles = [
        ("primary", [choice["primary"]] if choice["primary"] else []),
        ("secondary", choice["secondary"]),
        ("guardrail", choice["guardrails"]),
    ]
    specs = [{**by_key[key].spec(), "role": role} for role, keys in roles for key in keys]
    # Kept values not computed for this definition and no job moving at it (a metric made before values
    # were kept, a job that was lost): start one; this report computes them from the events.
    metric_values_resume(metrics=[by_key[spec["key"]] for spec in specs])
    return specs


def _metric_sections(
    *, specs: list[dict], cells, order: list[str], correction: str, labels: dict, treatment_label: str
) -> list[dict]:
    """Every chosen metric's section, per segment, from the report's metric cells."""
    if not specs:
        return []
    sections = metric_report.metrics_report(specs=specs, cells=cells, correction=correction, order=order)
    for section in sections:  # said with the segments' names and the arms' words of this report
        section["sentences"] = metric_report.metric_sentences(
            section, correction=correction, labels=labels, treatment_label=treatment_label
        )
    return sections


def _empty_message(
    project_id: int, experience_key: str, comparison: str, users_t: int, users_h: int, asked: tuple[datetime, datetime]
) -> str:
    if users_t + users_h == 0:
        found = personalization_selectors.exposure_range(project_id=project_id, experience_key=experience_key)
        whose = f"{experience_key}'s" if experience_key else "This project's"
        if found is None:
            of = f"of {experience_key} " if experience_key else ""
            return (
                f"No exposures {of}have been stored yet. Once decide serves it, or its exposure events are sent or"
                " imported (and drained, within seconds), the report fills in."
            )
        start, end = asked
        return (
            f"No exposures in the range asked for ({_day(start)} to {_day(end - timedelta(microseconds=1))}):"
            f" {whose} exposures run from {_day(found[0])} to {_day(found[1])}. Leave the range empty to cover all"
            " of them, or pick dates within it."
        )
    if users_h == 0:
        if not experience_key:
            return "Nobody from the global holdout was exposed in this range; check the global holdout share."
        if comparison == "holdout":
            return "This experience has no holdout. Give it a holdout share, or compare variants against the control."
        return "Nobody saw the control variant in this range."
    return "Nobody in the treated group was exposed in this range."


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def lift_report_reusable(*, report: LiftReport, version: str, younger_than: timedelta) -> bool:
    """Whether `report` still answers for its settings: queued (it reads the data when it runs), or
    computed from exactly what is stored now (`version`, personalization's stored version) and, for
    a range counted back from the time of asking, younger than `younger_than`."""
    if report.status == ReportStatus.QUEUED or (report.status == ReportStatus.RUNNING and not report.data_version):
        return True
    if report.status not in (ReportStatus.RUNNING, ReportStatus.DONE) or not version:
        return False
    recent = report.created_at > timezone.now() - younger_than
    return report.data_version == version and (recent or not report.span.startswith("days:"))


def lift_report_request(
    *,
    project,
    experience_key: str = "",
    segment_by: str = "exposure:segment",
    comparison: str = "holdout",
    correction: str = "bh",
    days: int | None = None,
    start: date | None = None,
    end: date | None = None,
    exclude_missing: bool = False,
    reuse_younger_than: timedelta | None = None,
    by: AbstractBaseUser | None = None,
) -> LiftReport:
    """Queue a report for a worker; the page and the API poll its progress. The one way both get a
    report. With `reuse_younger_than`, the newest report with these settings is returned instead
    while lift_report_reusable says it still answers."""
    span = lift_span(experience_key=experience_key, days=days, start=start, end=end)
    breakdown = lift_params_validate(
        segment_by=segment_by, comparison=comparison, correction=correction, exclude_missing=exclude_missing
    )
    try:
        selectors.lift_segment_labels(project_id=project.pk, breakdown=breakdown)  # the run or segment exists
    except ValueError as exc:
        raise LiftInputError("segment_by", str(exc)) from None
    settings = {
        "experience_key": experience_key,
        "segment_by": segment_by,
        "comparison": comparison,
        "correction": correction,
        "exclude_missing": exclude_missing,
    }
    if reuse_younger_than is not None:
        latest = selectors.lift_report_latest(project_id=project.pk, span=span, **settings)
        if latest is not None:
            version = personalization_selectors.stored_version_for_report(
                project_id=project.pk, experience_key=experience_key
            )
            if lift_report_reusable(report=latest, version=version, younger_than=reuse_younger_than):
                return latest
    range_start, range_end = lift_span_range(
        project_id=project.pk, experience_key=experience_key, span=span, now=timezone.now()
    )
    report = LiftReport.objects.create(
        project=project, **settings, span=span, start=range_start, end=range_end, requested_by=by
    )
    from experiments.tasks import lift_report_task  # circular: tasks imports this module

    transaction.on_commit(lambda: lift_report_task.delay(report.pk))
    return report


def lift_report_run(*, report: LiftReport) -> LiftReport:
    """Compute a queued report, recording progress as it goes."""

    def progress(pct: int, label: str) -> None:
        LiftReport.objects.filter(pk=report.pk).update(progress=pct, progress_label=label, status=ReportStatus.RUNNING)

    # The version first, then the range and the data: whatever the drain stores from here on makes
    # the version differ, so this report is not reused past it.
    version = personalization_selectors.stored_version_for_report(
        project_id=report.project_id, experience_key=report.experience_key
    )
    if report.span == SPAN_EXPOSURES:  # exposures may have been stored since it was asked for
        report.start, report.end = lift_span_range(
            project_id=report.project_id, experience_key=report.experience_key, span=report.span, now=timezone.now()
        )
    LiftReport.objects.filter(pk=report.pk).update(data_version=version, start=report.start, end=report.end)
    report.data_version = version
    progress(5, "Starting")
    try:
        result = lift_compute(
            project=report.project,
            experience_key=report.experience_key,
            breakdown=Breakdown.parse(report.segment_by, exclude_missing=report.exclude_missing),
            start=report.start,
            end=report.end,
            comparison=report.comparison,
            correction=report.correction,
            progress=progress,
        )
    except Exception as exc:
        LiftReport.objects.filter(pk=report.pk).update(
            status=ReportStatus.FAILED, error=str(exc)[:2000], finished_at=timezone.now()
        )
        raise
    LiftReport.objects.filter(pk=report.pk).update(
        status=ReportStatus.DONE, progress=100, progress_label="Done", result=result, finished_at=timezone.now()
    )
    report.refresh_from_db()
    return report


def lift_reports_precompute() -> int:
    """Queue the default report of every project's global holdout, running and external experiences."""
    # Keep a week of history; older reports are superseded by the ones queued below.
    LiftReport.objects.filter(created_at__lt=timezone.now() - timedelta(days=7)).delete()
    count = 0
    analysed = {"running", "external"}  # ExperienceStatus values (that app's models are not imported here)
    for project in personalization_selectors.projects_all():
        experiences = personalization_selectors.experiences_for_project(project=project)
        keys = ["", *(e.key for e in experiences if e.status in analysed)]
        for key in keys:
            lift_report_request(project=project, experience_key=key)  # the page's default range
            count += 1
    return count
