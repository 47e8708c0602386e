"""REST API (secret keys): profiles and their events, scoped to the key's project."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from personalization import selectors, services
from personalization.models import Event, Experience, ExperienceStatus, Profile, Project
from personalization.workspace import permissions as role_map
from personalization.workspace.auth import KeyInfo


class ExperienceOutSerializer(serializers.Serializer):
    """The shape of an experience answer (built as a dict by `_experience_out`), for the schema."""

    key = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    external = serializers.BooleanField()
    goal_event = serializers.CharField()
    attribution_hours = serializers.IntegerField()
    holdout_share = serializers.FloatField()
    targeting = serializers.DictField()
    variants = serializers.ListField(child=serializers.DictField())
    compile_error = serializers.DictField(
        allow_null=True,
        help_text="why decide leaves this experience out ({field, message}: what to fix), or null when it is served",
    )


class ProjectOutSerializer(serializers.Serializer):
    """The shape of a project answer (built as a dict by `_project_out`), for the schema."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    global_holdout_share = serializers.FloatField()
    created_at = serializers.DateTimeField()


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
        project = Project.objects.get(pk=request.kairos_project_id)
        return Response(
            {
                "id": project.pk,
                "name": project.name,
                "slug": project.slug,
                "global_holdout_share": project.global_holdout_share,
            }
        )


class VariantInSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=120, required=False, default="")
    weight = serializers.FloatField(min_value=0, default=1.0, help_text="share of the split (normalised)")
    is_control = serializers.BooleanField(default=False)
    payload = serializers.JSONField(required=False, default=dict)


class ExperienceInSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=120)
    touchpoint = serializers.CharField(max_length=120, required=False, default="")
    external = serializers.BooleanField(
        default=False, help_text="assigned by another tool: analysis only, never served by decide"
    )
    variants = VariantInSerializer(many=True)
    goal_event = serializers.CharField(max_length=64, default="purchase")
    attribution_hours = serializers.IntegerField(default=72, help_text="the window after exposure, end included")
    holdout_share = serializers.FloatField(default=0.0, help_text="share sent as holdout (exposure holdout: true)")
    targeting = serializers.JSONField(
        required=False,
        default=dict,
        help_text='{"attributes": [{"attribute": "country", "op": "in", "values": ["DE"]}], "segments": [keys]}',
    )


class ExperiencePatchSerializer(serializers.Serializer):
    """What PATCH may change; leave a field out to keep it. `variants` replaces all of them."""

    name = serializers.CharField(max_length=120, required=False)
    touchpoint = serializers.CharField(max_length=120, required=False)
    variants = VariantInSerializer(many=True, required=False)
    goal_event = serializers.CharField(max_length=64, required=False)
    attribution_hours = serializers.IntegerField(required=False)
    holdout_share = serializers.FloatField(required=False)
    targeting = serializers.JSONField(required=False)


def _experience_out(experience: Experience) -> dict:
    variants = list(experience.variants.all())
    total = sum(v.weight for v in variants) or 1.0
    return {
        "key": experience.key,
        "name": experience.name,
        "status": experience.status,
        "external": experience.status == ExperienceStatus.EXTERNAL,
        "goal_event": experience.goal_event,
        "attribution_hours": experience.attribution_hours,
        "holdout_share": experience.holdout_share,
        "targeting": experience.targeting or {},
        "variants": [
            {"key": v.key, "name": v.name, "is_control": v.is_control, "share": v.weight / total, "payload": v.payload}
            for v in variants
        ],
        "compile_error": services.experience_compile_problem(experience=experience),
    }


def _error(field_name: str, message: str, status: int = 400) -> Response:
    return Response({"error": {"field": field_name, "message": message}}, status=status)


def _first_error(errors, prefix: str = "") -> tuple[str, str]:
    """("variants[0].key", "This field is required.") from DRF's nested error structure; paths are
    written as the storable-input check and the services write them."""
    if isinstance(errors, dict):
        name, inner = next((k, v) for k, v in errors.items() if v)
        if isinstance(name, int):  # DRF keys a list field's errors by position
            return _first_error(inner, f"{prefix}[{name}]")
        return _first_error(inner, f"{prefix}.{name}" if prefix else str(name))
    if isinstance(errors, list):
        for i, inner in enumerate(errors):
            if inner and isinstance(inner, dict | list):
                return _first_error(inner, f"{prefix}[{i}]")
            if inner:
                return prefix, str(inner)
    return prefix, str(errors)


class ExperienceViewSet(viewsets.ViewSet):
    """Experiences of your project. Register one run by another tool with `"external": true`."""

    required_action = {
        "list": "experiences",
        "retrieve": "experiences",
        "create": "experiences.edit",
        "partial_update": "experiences.edit",
    }
    lookup_field = "key"
    lookup_value_regex = "[-a-zA-Z0-9_]+"

    @extend_schema(responses={200: ExperienceOutSerializer(many=True)})
    def list(self, request):
        project = selectors.project_by_id(project_id=request.kairos_project_id)
        rows = selectors.experiences_for_project(project=project)
        return Response([_experience_out(selectors.experience_for_project(project=project, key=e.key)) for e in rows])

    @extend_schema(request=ExperienceInSerializer, responses={201: ExperienceOutSerializer, 400: dict})
    def create(self, request):
        incoming = ExperienceInSerializer(data=request.data)
        if not incoming.is_valid():
            field_name, message = _first_error(incoming.errors)
            return Response({"error": {"field": field_name, "message": message}}, status=400)
        data = dict(incoming.validated_data)
        project = selectors.project_by_id(project_id=request.kairos_project_id)
        try:
            experience = services.experience_create(
                project=project,
                key=data.pop("key"),
                name=data.pop("name"),
                touchpoint=data.pop("touchpoint") or "outside Kairos",
                variants=[dict(v) for v in data.pop("variants")],
                external=data.pop("external"),
                **data,
            )
        except services.ExperienceError as exc:
            return _error(exc.field, exc.message)
        return Response(_experience_out(selectors.experience_for_project(project=project, key=experience.key)), 201)

    @extend_schema(responses={200: ExperienceOutSerializer, 404: dict})
    def retrieve(self, request, key=None):
        project = selectors.project_by_id(project_id=request.kairos_project_id)
        experience = selectors.experience_for_project(project=project, key=key)
        if experience is None:
            return _error("key", f"no experience “{key}” in this project", status=404)
        return Response(_experience_out(experience))

    @extend_schema(request=ExperiencePatchSerializer, responses={200: ExperienceOutSerializer, 400: dict, 404: dict})
    def partial_update(self, request, key=None):
        """Change some fields: {"variants": [...]} replaces every variant (with their payloads)."""
        project = selectors.project_by_id(project_id=request.kairos_project_id)
        experience = selectors.experience_for_project(project=project, key=key)
        if experience is None:
            return _error("key", f"no experience “{key}” in this project", status=404)
        incoming = ExperiencePatchSerializer(data=request.data)
        if not incoming.is_valid():
            return _error(*_first_error(incoming.errors))
        data = dict(incoming.validated_data)
        variants = [dict(v) for v in data.pop("variants")] if "variants" in data else None
        try:
            services.experience_update(experience=experience, by=_user(request), variants=variants, **data)
        except services.ExperienceError as exc:
            return _error(exc.field, exc.message)
        return Response(_experience_out(selectors.experience_for_project(project=project, key=key)))


def _project_out(project) -> dict:
    return {
        "id": project.pk,
        "name": project.name,
        "slug": project.slug,
        "global_holdout_share": project.global_holdout_share,
        "created_at": project.created_at,
    }


class KeyOrLogin(permissions.BasePermission):
    """A secret key, or any dashboard login (a new user has no project yet and may create one)."""

    message = "Authenticate with a secret key (Authorization: Bearer ks_…) or log in to the dashboard."

    def has_permission(self, request, view):
        return isinstance(request.auth, KeyInfo) or bool(getattr(request.user, "is_authenticated", False))


class ProjectsViewSet(viewsets.ViewSet):
    """Projects (admin). A dashboard session sees its projects and may create one (it becomes its
    admin); renaming and deleting need the admin role, or the project's own secret key."""

    lookup_value_regex = r"\d+"
    # Not HasProject: a newcomer with no project yet may list (none) and create one. The roles still
    # come from permissions.ACTIONS, checked against the project named in the URL.
    permission_classes = [KeyOrLogin]
    required_action = {
        "list": "projects",
        "create": "projects.create",
        "partial_update": "projects.manage",
        "destroy": "projects.manage",
    }

    def _project(self, request, pk) -> Project | None:
        """The project `pk` if the caller may manage it; None if it is not theirs (404).
        Raises PermissionDenied (403) for a member whose role may not."""
        if not str(pk).isdigit():
            return None
        if isinstance(request.auth, KeyInfo):
            if int(pk) != request.auth.project_id:
                return None
            return selectors.project_by_id_or_none(project_id=int(pk))
        role = selectors.member_role(user=request.user, project_id=int(pk))
        if role is None:
            return None
        if not role_map.principal_allows(principal=role, action="projects.manage"):
            raise exceptions.PermissionDenied(
                f"Your role ({role}) may not use projects.manage; ask an admin of this project."
            )
        return selectors.project_by_id_or_none(project_id=int(pk))

    @extend_schema(responses={200: ProjectOutSerializer(many=True)})
    def list(self, request):
        if isinstance(request.auth, KeyInfo):
            projects = [selectors.project_by_id(project_id=request.auth.project_id)]
        else:
            projects = selectors.projects_of_user(user=request.user)
        return Response([_project_out(p) for p in projects])

    @extend_schema(request=dict, responses={201: ProjectOutSerializer, 400: dict, 403: dict})
    def create(self, request):
        """Create a project: {"name": "Acme shop"}. Needs a dashboard login (its user becomes admin)."""
        if isinstance(request.auth, KeyInfo) and not role_map.principal_allows(
            principal=role_map.SECRET_KEY, action="projects.create"
        ):
            message = "a secret key belongs to one project; log in to the dashboard to create another"
            return Response({"error": {"field": "Authorization", "message": message}}, status=403)
        try:
            project = services.project_create(name=str(request.data.get("name", "")), owner=request.user)
        except services.ProjectError as exc:
            return Response({"error": {"field": exc.field, "message": exc.message}}, status=400)
        return Response(_project_out(project), status=201)

    @extend_schema(request=dict, responses={200: ProjectOutSerializer, 400: dict, 404: dict})
    def partial_update(self, request, pk=None):
        """Rename: {"name": "New name"}."""
        project = self._project(request, pk)
        if project is None:
            return Response({"error": {"field": "id", "message": "no project of yours with this id"}}, status=404)
        try:
            project = services.project_rename(
                project=project, name=str(request.data.get("name", "")), by=_user(request)
            )
        except services.ProjectError as exc:
            return Response({"error": {"field": exc.field, "message": exc.message}}, status=400)
        return Response(_project_out(project))

    @extend_schema(responses={204: None, 400: dict, 404: dict})
    def destroy(self, request, pk=None):
        """Delete with everything in it; `?confirm=<slug>` is required."""
        project = self._project(request, pk)
        if project is None:
            return Response({"error": {"field": "id", "message": "no project of yours with this id"}}, status=404)
        try:
            services.project_delete(project=project, confirm=request.query_params.get("confirm", ""), by=_user(request))
        except services.ProjectError as exc:
            return Response({"error": {"field": exc.field, "message": exc.message}}, status=400)
        return Response(status=204)


def _user(request):
    return request.user if getattr(request.user, "is_authenticated", False) else None
