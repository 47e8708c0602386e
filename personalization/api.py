"""REST API (secret keys): profiles and their events, scoped to the key's project."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from personalization import selectors
from personalization.models import Event, Profile


class ProfileSerializer(serializers.ModelSerializer):
    identities = serializers.SerializerMethodField()

    class Meta:
        model = Profile
        fields = [
            "id",
            "external_id",
            "identities",
            "attributes",
            "consent",
            "do_not_personalize",
            "first_seen",
            "last_seen",
        ]

    def get_identities(self, profile) -> list[dict]:
        return [{"kind": i.kind, "value": i.value} for i in profile.identities.all()]


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["event_id", "type", "ts", "session_id", "value", "properties", "received_at"]


class ProfileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Profiles of your project. Another project's profiles answer 404."""

    required_action = "profiles"
    lookup_value_regex = "[0-9]+"
    serializer_class = ProfileSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reads the model for the schema
            return Profile.objects.none()
        return selectors.profiles_for_project(project_id=self.request.kairos_project_id).prefetch_related("identities")

    @extend_schema(responses=EventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        profile = self.get_object()
        page = self.paginate_queryset(
            selectors.profile_events(project_id=request.kairos_project_id, profile_id=profile.pk)
        )
        return self.get_paginated_response(EventSerializer(page, many=True).data)


class ProjectView(viewsets.ViewSet):
    """The project your key belongs to."""

    required_action = "project"

    @extend_schema(responses={200: dict})
    def list(self, request):
        from personalization.models import Project

        project = Project.objects.get(pk=request.kairos_project_id)
        return Response(
            {
                "id": project.pk,
                "name": project.name,
                "slug": project.slug,
                "global_holdout_share": project.global_holdout_share,
            }
        )
