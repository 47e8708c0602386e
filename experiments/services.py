"""Lift reports: request (queued for a worker), compute (aggregate in PostgreSQL, then statistics)."""

from collections.abc import Callable
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from experiments import selectors, sentences, stats
from experiments.models import LiftReport, ReportStatus
from experiments.segmentation import Segmentation

CORRECTIONS = ("bh", "holm")
COMPARISONS = ("holdout", "control")


class LiftInputError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _holdout_share(*, project, experience_key: str, comparison: str) -> tuple[float, str]:
    """(expected holdout share for the SRM check, control variant key)."""
    from personalization.models import Experience

    if not experience_key:
        return project.global_holdout_share, ""
    experience = Experience.objects.filter(project=project, key=experience_key).prefetch_related("variants").first()
    if experience is None:
        # Assigned outside Kairos: no configured share is known; compare against the observed split.
        return -1.0, ""
    control = next((v for v in experience.variants.all() if v.is_control), None)
    if comparison == "control":
        total = sum(v.weight for v in experience.variants.all()) or 1.0
        return (control.weight / total if control else 0.5), (control.key if control else "")
    return experience.holdout_share, (control.key if control else "")


def lift_params_validate(*, segment_by: str, comparison: str, correction: str, days: int) -> Segmentation:
    try:
        segmentation = Segmentation.parse(segment_by)
    except ValueError as exc:
        raise LiftInputError("segment_by", str(exc)) from None
    if comparison not in COMPARISONS:
        raise LiftInputError("comparison", "use holdout (treatment vs holdout) or control (variants vs control)")
    if correction not in CORRECTIONS:
        raise LiftInputError("correction", "use bh (Benjamini–Hochberg) or holm")
    if not 1 <= days <= 365:
        raise LiftInputError("days", "choose a range between 1 and 365 days")
    return segmentation


def lift_compute(
    *,
    project,
    experience_key: str,
    segmentation: Segmentation,
    start: datetime,
    end: datetime,
    comparison: str = "holdout",
    correction: str = "bh",
    progress: Callable[[int, str], None] | None = None,
) -> dict:
    """The whole report as JSON-able data: statistics, daily lift, plain sentences."""
    progress = progress or (lambda pct, label: None)
    share, control_key = _holdout_share(project=project, experience_key=experience_key, comparison=comparison)
    population = selectors.lift_population(
        project_id=project.pk,
        experience_key=experience_key,
        comparison=comparison,
        start=start,
        end=end,
        control_key=control_key,
    )
    progress(10, "Aggregating exposures and outcomes in PostgreSQL")
    cells = selectors.lift_cells(population=population, segmentation=segmentation)
    segments = selectors.lift_segment_stats(cells=cells)
    daily = selectors.lift_daily_stats(cells=cells)
    progress(80, "Computing statistics")
    users_t = sum(s.treatment.n for s in segments)
    users_h = sum(s.holdout.n for s in segments)
    if not 0 < share < 1:
        # No configured split to check against (outside campaign, or a 0/100 % control weight).
        share = users_h / (users_t + users_h) if users_t + users_h else 0.5
    if not segments or users_t == 0 or users_h == 0:
        return {
            "empty": True,
            "users_treatment": users_t,
            "users_holdout": users_h,
            "message": _empty_message(experience_key, comparison, users_t, users_h),
        }
    report = stats.lift_report(segments=segments, holdout_share=share, correction=correction)
    labels = (
        {"treatment_label": "The variants", "holdout_label": "the control"}
        if comparison == "control" and experience_key
        else {}
    )
    cumulative = []
    running_t = running_h = None
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
    progress(95, "Writing the report")
    return {
        "empty": False,
        "report": report.to_dict(),
        "sentences": sentences.summary_sentences(report, metric_label="conversion", **labels),
        "revenue_sentences": sentences.summary_sentences(
            report, metric_label="revenue per user", metric="revenue", **labels
        ),
        "daily": stats.jsonable(cumulative),
        "holdout_share": share,
        "segment_label": segmentation.label,
    }


def _empty_message(experience_key: str, comparison: str, users_t: int, users_h: int) -> str:
    if users_t + users_h == 0:
        return "No exposures in this time range yet. Once decide serves this audience, the report fills in."
    if users_h == 0:
        if not experience_key:
            return "Nobody from the global holdout was exposed in this range; check the global holdout share."
        if comparison == "holdout":
            return "This experience has no holdout. Give it a holdout share, or compare variants against the control."
        return "Nobody saw the control variant in this range."
    return "Nobody in the treated group was exposed in this range."


def lift_report_request(
    *,
    project,
    experience_key: str = "",
    segment_by: str = "exposure:segment",
    comparison: str = "holdout",
    correction: str = "bh",
    days: int = 14,
    by: AbstractBaseUser | None = None,
) -> LiftReport:
    """Queue a report for a worker; the page polls its progress."""
    lift_params_validate(segment_by=segment_by, comparison=comparison, correction=correction, days=days)
    end = timezone.now()
    report = LiftReport.objects.create(
        project=project,
        experience_key=experience_key,
        segment_by=segment_by,
        comparison=comparison,
        correction=correction,
        start=end - timedelta(days=days),
        end=end,
        requested_by=by,
    )
    from experiments.tasks import lift_report_task

    transaction.on_commit(lambda: lift_report_task.delay(report.pk))
    return report


def lift_report_run(*, report: LiftReport) -> LiftReport:
    """Compute a queued report, recording progress as it goes."""

    def progress(pct: int, label: str) -> None:
        LiftReport.objects.filter(pk=report.pk).update(progress=pct, progress_label=label, status=ReportStatus.RUNNING)

    progress(5, "Starting")
    try:
        result = lift_compute(
            project=report.project,
            experience_key=report.experience_key,
            segmentation=Segmentation.parse(report.segment_by),
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


def lift_reports_precompute(*, days: int = 14) -> int:
    """Queue the default report of every project's global holdout and running experiences."""
    from personalization.models import Experience, ExperienceStatus, Project

    # Keep a week of history; older reports are superseded by the ones queued below.
    LiftReport.objects.filter(created_at__lt=timezone.now() - timedelta(days=7)).delete()
    count = 0
    for project in Project.objects.all():
        running = Experience.objects.filter(project=project, status=ExperienceStatus.RUNNING)
        keys = ["", *running.values_list("key", flat=True)]
        for key in keys:
            lift_report_request(project=project, experience_key=key, days=days)
            count += 1
    return count
