"""REST API (secret keys): data subject requests from the customer's own systems, and consent."""

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from personalization import services as personalization_services
from personalization.ingest.schema import BatchError
from privacy import services
from privacy.models import DataSubjectRequest, Regime, RequestKind, RequestStatus


class RequestSerializer(serializers.ModelSerializer):
    reference = serializers.CharField(read_only=True)

    class Meta:
        model = DataSubjectRequest
        fields = [
            "id",
            "reference",
            "kind",
            "regime",
            "status",
            "identifiers",
            "external_ref",
            "received_at",
            "due_at",
            "confirm_by",
            "completed_at",
            "progress_done",
            "progress_total",
            "certificate",
            "rejection_reason",
        ]


class RequestCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=RequestKind.values)
    regime = serializers.ChoiceField(choices=Regime.values, default=Regime.GDPR)
    identifiers = serializers.JSONField(help_text='{"user_id", "anonymous_id", "email"}: at least one')
    verification = serializers.CharField(required=False, allow_blank=True, default="")
    external_ref = serializers.CharField(required=False, allow_blank=True, default="")
    start = serializers.BooleanField(default=False, help_text="start the job at once (needs verification)")


def _invalid(incoming: serializers.Serializer) -> Response:
    """DRF's first validation problem, in the API's error shape (field and message)."""
    field, problems = next(iter(incoming.errors.items()))
    return _error(field, str(problems[0]) if isinstance(problems, list) else str(problems))


def _error(field: str, message: str) -> Response:
    return Response({"error": {"field": field, "message": message}}, status=status.HTTP_400_BAD_REQUEST)


class PrivacyRequestViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Data subject requests of your project: record one (access, erasure, objection, restriction)
    and follow its status. Another project's requests answer 404."""

    serializer_class = RequestSerializer
    required_action = "privacy.api"

    def get_queryset(self):
        return DataSubjectRequest.objects.filter(project_id=self.request.kairos_project_id).order_by("-received_at")

    @extend_schema(request=RequestCreateSerializer, responses={201: RequestSerializer, 400: dict})
    def create(self, request):
        incoming = RequestCreateSerializer(data=request.data)
        if not incoming.is_valid():
            return _invalid(incoming)
        data = incoming.validated_data
        try:
            created = services.dsr_create(
                project_id=request.kairos_project_id,
                kind=data["kind"],
                regime=data["regime"],
                identifiers=data["identifiers"],
                verification=data["verification"],
                external_ref=data["external_ref"],
                source="api",
            )
            if data["start"]:
                if created.status != RequestStatus.VERIFIED:
                    raise services.RequestError("start", "give `verification` to start the job at once")
                services.dsr_process(request=created, by=None)
        except services.RequestError as exc:
            return _error(exc.field, exc.message)
        return Response(RequestSerializer(created).data, status=status.HTTP_201_CREATED)


class ConsentSerializer(serializers.Serializer):
    user_id = serializers.CharField(required=False, max_length=128)
    anonymous_id = serializers.CharField(required=False, max_length=128)
    purposes = serializers.DictField(child=serializers.BooleanField(), help_text='e.g. {"personalization": true}')


class ConsentView(viewsets.ViewSet):
    """Record a person's consent (purpose → granted), as the snippet's Kairos.consent does."""

    required_action = "privacy.api"

    @extend_schema(request=ConsentSerializer, responses={202: dict, 400: dict})
    def create(self, request):
        incoming = ConsentSerializer(data=request.data)
        if not incoming.is_valid():
            return _invalid(incoming)
        data = incoming.validated_data
        if not data.get("user_id") and not data.get("anonymous_id"):
            return _error("user_id", "give user_id or anonymous_id")
        if not data["purposes"]:
            return _error("purposes", 'give at least one purpose, e.g. {"personalization": true}')
        event = {"event_id": f"consent-{uuid.uuid4().hex}", "type": "consent", "properties": data["purposes"]}
        event.update({k: data[k] for k in ("user_id", "anonymous_id") if data.get(k)})
        try:
            result = personalization_services.events_ingest(
                project_id=request.kairos_project_id, payload={"events": [event]}
            )
        except BatchError as exc:
            return _error(exc.field, exc.message)
        if result.rejected:
            problem = result.rejected[0]
            return _error(str(problem.get("field", "purposes")), str(problem.get("message", "rejected")))
        return Response({"recorded": True}, status=status.HTTP_202_ACCEPTED)
