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
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from experiments import metric_services, selectors, services
from experiments.models import LiftReport, Metric, ReportStatus
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
                description="exposure:segment (default), exposure:day (day of first exposure, project time zone),"
                " attribute:<name>, run:<clustering run id> (its behavior segments), segment:<segment key> (in it"
                " or not), live:stage, live:first_touch, live:tenure, live:device or intent:<intent key>",
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


def _metric_body(metric: Metric) -> dict:
    return {**metric.spec(), "values_progress": metric.values_progress, "created_at": metric.created_at}


class MetricView(viewsets.ViewSet):
    """The project's metrics (conversion, revenue, retention, time to conversion, ratio, count) and
    which of them each report shows. Every project starts with conversion, revenue, 30-day return and
    events per user."""

    required_action = {
        "list": "lift",
        "retrieve": "lift",
        "choice": "lift",
        "choice_set": "experiences.edit",
        "create": "experiences.edit",
        "partial_update": "experiences.edit",
        "destroy": "experiences.edit",
    }
    lookup_field = "key"
    lookup_value_regex = "[-a-zA-Z0-9_]{1,64}"

    def _project(self, request):
        project = personalization_selectors.project_by_id(project_id=request.kairos_project_id)
        metric_services.metric_defaults_ensure(project=project)
        return project

    def _metric(self, request, key):
        project = self._project(request)
        metric = selectors.metric_by_key(project_id=project.pk, key=key)
        if metric is None:
            raise NotFound("No metric with this key in your project: list them with GET /api/v1/metrics/.")
        return metric

    @extend_schema(responses={200: dict})
    def list(self, request):
        project = self._project(request)
        return Response([_metric_body(m) for m in selectors.metrics_for_project(project_id=project.pk)])

    @extend_schema(responses={200: dict, 404: dict})
    def retrieve(self, request, key=None):
        return Response(_metric_body(self._metric(request, key)))

    @extend_schema(request=dict, responses={201: dict, 400: dict})
    def create(self, request):
        body = request.data if isinstance(request.data, dict) else {}
        data = {k: v for k, v in body.items() if k != "key"}
        try:
            metric = metric_services.metric_create(project=self._project(request), key=body.get("key"), data=data)
        except services.LiftInputError as exc:
            return _bad(exc.field, exc.message)
        return Response(_metric_body(metric), status=status.HTTP_201_CREATED)

    @extend_schema(request=dict, responses={200: dict, 400: dict, 404: dict})
    def partial_update(self, request, key=None):
        metric = self._metric(request, key)
        try:
            metric = metric_services.metric_update(
                metric=metric, data=request.data if isinstance(request.data, dict) else {}
            )
        except services.LiftInputError as exc:
            return _bad(exc.field, exc.message)
        return Response(_metric_body(metric))

    @extend_schema(responses={204: None, 404: dict})
    def destroy(self, request, key=None):
        metric_services.metric_delete(metric=self._metric(request, key))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[OpenApiParameter("experience", str, description="experience key; empty for the global holdout")],
        responses={200: dict},
    )
    @action(detail=False, methods=["get"], url_path="choice")
    def choice(self, request):
        """The primary, secondary and guardrail metric keys a report shows (PUT the same shape to change them)."""
        project = self._project(request)
        experience = request.query_params.get("experience", "")
        return Response(selectors.experience_metrics_choice(project_id=project.pk, experience_key=experience))

    @extend_schema(request=dict, responses={200: dict, 400: dict})
    @choice.mapping.put
    def choice_set(self, request):
        """Change a report's metrics: {"primary": key, "secondary": [keys], "guardrails": [keys]}."""
        project = self._project(request)
        experience = request.query_params.get("experience", "")
        body = request.data if isinstance(request.data, dict) else {}
        for field in ("secondary", "guardrails"):
            if not isinstance(body.get(field, []), list) or not all(isinstance(k, str) for k in body.get(field, [])):
                return _bad(field, 'give a list of metric keys, e.g. ["revenue"]')
        if not isinstance(body.get("primary", ""), str):
            return _bad("primary", 'give one metric key, e.g. "conversion"')
        try:
            metric_services.experience_metrics_set(
                project=project,
                experience_key=experience,
                primary=body.get("primary", ""),
                secondary=body.get("secondary", []),
                guardrails=body.get("guardrails", []),
            )
        except services.LiftInputError as exc:
            return _bad(exc.field, exc.message)
        return Response(selectors.experience_metrics_choice(project_id=project.pk, experience_key=experience))
