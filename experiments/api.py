"""REST API: the lift report as JSON (secret key or dashboard session)."""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.response import Response

from experiments import services
from personalization.models import Project


class LiftReportView(viewsets.ViewSet):
    """Per-segment lift of all personalization (global holdout) or one experience, computed now."""

    required_action = "lift"

    @extend_schema(
        parameters=[
            OpenApiParameter("experience", str, description="experience key; empty for the global holdout"),
            OpenApiParameter("segment_by", str, description="exposure:segment, attribute:<name> or demo:intent"),
            OpenApiParameter("days", int, description="time range in days (default 14)"),
            OpenApiParameter("comparison", str, description="holdout (default) or control"),
            OpenApiParameter("correction", str, description="bh (default) or holm"),
        ],
        responses={200: dict},
    )
    def list(self, request):
        query = request.query_params
        raw_days = query.get("days", "14")
        if not raw_days.isdigit():
            return Response(
                {"error": {"field": "days", "message": "must be a whole number of days, e.g. 14"}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            segmentation = services.lift_params_validate(
                segment_by=query.get("segment_by", "exposure:segment"),
                comparison=query.get("comparison", "holdout"),
                correction=query.get("correction", "bh"),
                days=int(raw_days),
            )
        except services.LiftInputError as exc:
            return Response({"error": {"field": exc.field, "message": exc.message}}, status=status.HTTP_400_BAD_REQUEST)
        end = timezone.now()
        result = services.lift_compute(
            project=Project.objects.get(pk=request.kairos_project_id),
            experience_key=query.get("experience", ""),
            segmentation=segmentation,
            start=end - timedelta(days=int(raw_days)),
            end=end,
            comparison=query.get("comparison", "holdout"),
            correction=query.get("correction", "bh"),
        )
        return Response(result)
