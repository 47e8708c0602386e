"""REST API: lift reports as JSON (secret key or dashboard session).

The same path as the Lift page: asking for a report returns the newest one with those settings,
queueing one for a worker when none answers (newer exposures or goal events stored since, or
`fresh=true`); poll it by id until its status is "done". A done report says how old it is.
"""

from datetime import date, timedelta

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.response import Response

from experiments import services
from experiments.models import LiftReport, ReportStatus
from personalization import selectors as personalization_selectors

# A report of the last N days slides with the clock: past this age it is recomputed even if no data came.
REUSE_YOUNGER_THAN = timedelta(minutes=15)


def _age(report: LiftReport) -> dict:
    """How old a done report is, and whether data its numbers would include has been stored since."""
    if report.status != ReportStatus.DONE or report.finished_at is None:
        return {"computed_at": None, "age_seconds": None, "newer_data": None}
    version = personalization_selectors.stored_version_for_report(
        project_id=report.project_id, experience_key=report.experience_key
    )
    return {
        "computed_at": report.finished_at,
        "age_seconds": round((timezone.now() - report.finished_at).total_seconds()),
        "newer_data": None if not version else version != report.data_version,
    }


def _report_body(report: LiftReport) -> dict:
    return {
        "id": report.pk,
        "status": report.status,
        "progress": report.progress,
        "progress_label": report.progress_label,
        "experience": report.experience_key,
        "segment_by": report.segment_by,
        "comparison": report.comparison,
        "correction": report.correction,
        "exclude_missing": report.exclude_missing,
        "span": report.span,
        "start": report.start,
        "end": report.end,
        **_age(report),
        "error": report.error,
        "poll": f"/api/v1/lift/{report.pk}/",
        "result": report.result if report.status == ReportStatus.DONE else None,
    }


def _bad(field: str, message: str) -> Response:
    return Response({"error": {"field": field, "message": message}}, status=status.HTTP_400_BAD_REQUEST)


def _answer(report: LiftReport) -> Response:
    done = report.status in (ReportStatus.DONE, ReportStatus.FAILED)
    response = Response(_report_body(report), status=status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED)
    if not done:
        response["Location"] = f"/api/v1/lift/{report.pk}/"
        response["Retry-After"] = "1"
    return response


class LiftReportView(viewsets.ViewSet):
    """Per-segment lift of all personalization (global holdout) or one experience."""

    lookup_value_regex = r"\d+"

    required_action = "lift"

    @extend_schema(
        parameters=[
            OpenApiParameter("experience", str, description="experience key; empty for the global holdout"),
            OpenApiParameter(
                "segment_by",
                str,
                description="exposure:segment (default), attribute:<name>, run:<clustering run id> (its behavior"
                " segments) or segment:<segment key> (in it or not)",
            ),
            OpenApiParameter(
                "days",
                int,
                description="time range in days up to now, 1–365 (default: an experience's whole exposure range,"
                " the global holdout's last 14 days)",
            ),
            OpenApiParameter("start", str, description="first day of the range, YYYY-MM-DD (UTC; with end)"),
            OpenApiParameter("end", str, description="last day of the range, included, YYYY-MM-DD (UTC; with start)"),
            OpenApiParameter(
                "fresh", bool, description="true: compute a new report even if one answers (default false)"
            ),
            OpenApiParameter("comparison", str, description="holdout (default) or control"),
            OpenApiParameter("correction", str, description="bh (default) or holm"),
            OpenApiParameter("exclude_missing", bool, description="leave out people with no value (default false)"),
        ],
        responses={200: dict, 202: dict},
    )
    def list(self, request):
        """The newest report with these settings (200 when done), or one queued now (202: poll `poll`)."""
        query = request.query_params
        raw_days = query.get("days", "")
        if raw_days and not raw_days.isdigit():
            return _bad("days", "must be a whole number of days, e.g. 14")
        dates = {}
        for name in ("start", "end"):
            raw = query.get(name, "")
            try:
                dates[name] = date.fromisoformat(raw) if raw else None
            except ValueError:
                return _bad(name, f"must be a date as YYYY-MM-DD, e.g. 2011-03-01, not {raw[:40]!r}")
        flags = {}
        for name in ("exclude_missing", "fresh"):
            flags[name] = query.get(name, "false").lower()
            if flags[name] not in ("true", "false", "1", "0"):
                return _bad(name, "use true or false")
        try:
            report = services.lift_report_request(
                project=personalization_selectors.project_by_id(project_id=request.kairos_project_id),
                experience_key=query.get("experience", ""),
                segment_by=query.get("segment_by", "exposure:segment"),
                comparison=query.get("comparison", "holdout"),
                correction=query.get("correction", "bh"),
                days=int(raw_days) if raw_days else None,
                **dates,
                exclude_missing=flags["exclude_missing"] in ("true", "1"),
                reuse_younger_than=None if flags["fresh"] in ("true", "1") else REUSE_YOUNGER_THAN,
            )
        except services.LiftInputError as exc:
            return _bad(exc.field, exc.message)
        return _answer(report)

    @extend_schema(responses={200: dict, 202: dict})
    def retrieve(self, request, pk=None):
        """One report by id: 202 while it is computed, 200 with `result` when done."""
        return _answer(get_object_or_404(LiftReport, pk=pk, project_id=request.kairos_project_id))
