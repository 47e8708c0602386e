"""REST API: lift reports as JSON (secret key or dashboard session).

The same path as the Lift page: asking for a report returns the newest one with those settings,
queueing one for a worker when none is fresh; poll it by id until its status is "done".
"""

from datetime import timedelta

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.response import Response

from experiments import services
from experiments.models import LiftReport, ReportStatus
from personalization import selectors as personalization_selectors

REUSE_YOUNGER_THAN = timedelta(minutes=15)  # as often as the worker precomputes the usual reports


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
        "start": report.start,
        "end": report.end,
        "error": report.error,
        "poll": f"/api/v1/lift/{report.pk}/",
        "result": report.result if report.status == ReportStatus.DONE else None,
    }


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
            OpenApiParameter("days", int, description="time range in days up to now (default 14, at most 365)"),
            OpenApiParameter("comparison", str, description="holdout (default) or control"),
            OpenApiParameter("correction", str, description="bh (default) or holm"),
            OpenApiParameter("exclude_missing", bool, description="leave out people with no value (default false)"),
        ],
        responses={200: dict, 202: dict},
    )
    def list(self, request):
        """The newest report with these settings (200 when done), or one queued now (202: poll `poll`)."""
        query = request.query_params
        raw_days = query.get("days", "14")
        if not raw_days.isdigit():
            return Response(
                {"error": {"field": "days", "message": "must be a whole number of days, e.g. 14"}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        exclude = query.get("exclude_missing", "false").lower()
        if exclude not in ("true", "false", "1", "0"):
            return Response(
                {"error": {"field": "exclude_missing", "message": "use true or false"}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            report = services.lift_report_request(
                project=personalization_selectors.project_by_id(project_id=request.kairos_project_id),
                experience_key=query.get("experience", ""),
                segment_by=query.get("segment_by", "exposure:segment"),
                comparison=query.get("comparison", "holdout"),
                correction=query.get("correction", "bh"),
                days=int(raw_days),
                exclude_missing=exclude in ("true", "1"),
                reuse_younger_than=REUSE_YOUNGER_THAN,
            )
        except services.LiftInputError as exc:
            return Response({"error": {"field": exc.field, "message": exc.message}}, status=status.HTTP_400_BAD_REQUEST)
        return _answer(report)

    @extend_schema(responses={200: dict, 202: dict})
    def retrieve(self, request, pk=None):
        """One report by id: 202 while it is computed, 200 with `result` when done."""
        return _answer(get_object_or_404(LiftReport, pk=pk, project_id=request.kairos_project_id))
