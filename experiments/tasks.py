"""Celery tasks of the experiments app."""

from celery import shared_task
from django.db import OperationalError

from experiments import metric_services
from experiments.models import LiftReport, ReportStatus


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, retry_jitter=True, acks_late=True)
def lift_report_task(report_id: int) -> str:
    report = LiftReport.objects.filter(pk=report_id).select_related("project").first()
    if report is None or report.status == ReportStatus.DONE:
        return "gone or done"  # deleted, or a duplicate delivery after it finished: nothing to do
    from experiments import services  # on first use: it loads scipy.special (~0.3 CPU-s), at every worker's start

    services.lift_report_run(report=report)
    return "done"


@shared_task(acks_late=True)
def lift_reports_precompute_task() -> int:
    """Keep a fresh report for the global holdout and every running experience of every project."""
    from experiments import services  # on first use, as above

    return services.lift_reports_precompute()


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, retry_jitter=True, acks_late=True)
def metric_values_fill_task(metric_id: int, *more_ids: int) -> str:
    """Metrics' kept values over every exposure (created or their definition edited), in one pass."""
    return metric_services.metric_values_fill(metric_ids=[metric_id, *more_ids])
