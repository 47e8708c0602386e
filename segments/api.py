"""REST API (secret key or dashboard session): the project's saved segments (read-only), who the
embedding covers, and the expected quality of a lookalike before it is saved.

Behavior segments of finished clustering runs, rule segments and lookalikes, as the experience
form's picker lists them; decide targets them by `key`.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from segments import selectors, services
from segments.models import Intent, Segment, SegmentKind

MAX_RUN_ID = 2**31 - 1  # PostgreSQL integer: a larger number cannot name a run


class SegmentSerializer(serializers.ModelSerializer):
    """A segment in a list."""

    run = serializers.IntegerField(source="run_id", allow_null=True, help_text="clustering run id (behavior)")

    class Meta:
        model = Segment
        fields = ["key", "name", "kind", "size", "run", "created_at"]


class SegmentDetailSerializer(SegmentSerializer):
    """One segment with what describes it."""

    top_features = serializers.SerializerMethodField(help_text="behaviors that over-index most, with the ratio")
    behaviors_more = serializers.SerializerMethodField()
    behaviors_less = serializers.SerializerMethodField()

    class Meta(SegmentSerializer.Meta):
        fields = [
            *SegmentSerializer.Meta.fields,
            "suggested_name",
            "conversion_rate",
            "value_per_profile",
            "top_features",
            "behaviors_more",
            "behaviors_less",
            "definition",
        ]

    def _card(self, segment: Segment, part: str) -> list[dict]:
        return [
            {"feature": str(row.get("feature", "")), "ratio": float(row.get("ratio", 0))}
            for row in (segment.card or {}).get(part, [])
        ]

    def get_top_features(self, segment: Segment) -> list[dict[str, object]]:
        return self._card(segment, "over_index")

    def get_behaviors_more(self, segment: Segment) -> list[dict[str, object]]:
        return self._card(segment, "more")

    def get_behaviors_less(self, segment: Segment) -> list[dict[str, object]]:
        return self._card(segment, "less")


def _bad(field: str, message: str) -> ValidationError:
    return ValidationError({"error": {"field": field, "message": message}})


class SegmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Saved segments of your project (read-only). Another project's segments answer 404."""

    required_action = "segments"
    lookup_field = "key"
    lookup_value_regex = r"[-A-Za-z0-9_.]{1,64}"  # a segment key (behavior keys hold a dot: b12.3); else 404

    def get_serializer_class(self):
        return SegmentDetailSerializer if self.action == "retrieve" else SegmentSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reads the model for the schema
            return Segment.objects.none()
        query = self.request.query_params
        kind = query.get("kind") or None
        if kind is not None and kind not in SegmentKind.values:
            raise _bad("kind", f"use one of {', '.join(SegmentKind.values)}, or leave it out for every kind")
        raw_run = query.get("run") or None
        if raw_run is not None and not (raw_run.isdigit() and 1 <= int(raw_run) <= MAX_RUN_ID):
            raise _bad("run", "give a clustering run id (a whole number, e.g. 12), or leave it out")
        return selectors.segments_for_api(
            project_id=self.request.kairos_project_id, kind=kind, run_id=int(raw_run) if raw_run else None
        )

    def get_object(self):
        segment = selectors.segment_by_key(project_id=self.request.kairos_project_id, key=self.kwargs["key"])
        if segment is None or (segment.kind == SegmentKind.BEHAVIOR and segment.run.status != "done"):
            raise NotFound("No segment with this key in your project: list them with GET /api/v1/segments/.")
        return segment

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, enum=SegmentKind.values, description="only this kind"),
            OpenApiParameter("run", OpenApiTypes.INT, description="only segments of this clustering run"),
        ],
        responses={200: SegmentSerializer(many=True)},
    )
    def list(self, request, *args, **kwargs):
        """Segments, newest clustering run first, then lookalikes and rules; paged with limit/offset."""
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: SegmentDetailSerializer})
    def retrieve(self, request, *args, **kwargs):
        """One segment by key: size, kind, run, and the behaviors that describe it."""
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"], url_path="coverage")
    def coverage(self, request):
        """Who the latest embedding covers: window (days), minimum of events, people segmented, and how
        many were left out and why (`left_out.fewer_events`, `left_out.outside_window`)."""
        return Response(selectors.embedding_coverage(project_id=request.kairos_project_id))

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"], url_path="lookalike-preview")
    def lookalike_preview(self, request):
        """Expected quality of a lookalike of a seed, before saving: `{"seed_segment": key}`,
        `{"seed_intent": intent key}` (people at or above its threshold) or `{"seed_ids": ["u1", ...]}`.
        Each curve point has recall (with its interval), lift, estimated
        precision as `precision_interval` (the range the data allow: cautious and optimistic reading,
        each with its 90 % sampling uncertainty; `precision_meaning` says so) and its middle as
        `precision`, or null with `precision_reason` saying why there is none."""
        body = request.data if isinstance(request.data, dict) else {}
        project_id = request.kairos_project_id
        try:
            if isinstance(body.get("seed_segment"), str):
                seed = services.seed_from_segment(project_id=project_id, segment_key=body["seed_segment"])
            elif isinstance(body.get("seed_intent"), str):
                seed = services.seed_from_intent(project_id=project_id, intent_key=body["seed_intent"])
            elif isinstance(body.get("seed_ids"), list) and all(isinstance(i, str) for i in body["seed_ids"]):
                seed = services.seed_from_ids(project_id=project_id, text="\n".join(body["seed_ids"]))
            else:
                raise services.SegmentsError(
                    "seed_segment",
                    "give a segment key as seed_segment, an intent key as seed_intent,"
                    " or a list of user ids as seed_ids",
                )
            return Response(services.lookalike_preview(project_id=project_id, seed=seed))
        except services.SegmentsError as exc:
            raise _bad(exc.field, exc.message) from exc


class IntentSerializer(serializers.ModelSerializer):
    """A named intent and how many people score at or above its threshold now."""

    people_above = serializers.SerializerMethodField(help_text="people whose score is at or above the threshold")

    class Meta:
        model = Intent
        fields = ["key", "name", "examples", "threshold", "people_above", "created_at", "updated_at"]

    def get_people_above(self, intent: Intent) -> int:
        return selectors.intent_people_above(intent=intent)


class IntentViewSet(viewsets.ViewSet):
    """Named intents of your project: a need in plain words with 3 to 20 example phrases. Everyone is
    scored 0 to 1 on each from their recent searches, titles and product names; experiences target
    them with `intent <key> >= 0.35`. Intents on health, religion, politics, sexuality or ethnic origin
    are refused (400)."""

    required_action = "segments"
    lookup_field = "key"
    lookup_value_regex = r"[a-z0-9-]{1,48}"

    def _intent(self, request, key: str) -> Intent:
        intent = selectors.intent_by_key(project_id=request.kairos_project_id, key=key)
        if intent is None:
            raise NotFound("No intent with this key in your project: list them with GET /api/v1/intents/.")
        return intent

    @staticmethod
    def _body(request) -> dict:
        if not isinstance(request.data, dict):
            raise _bad("body", 'send a JSON object, e.g. {"name": "planning a trip", "examples": ["visa rules", ...]}')
        return dict(request.data)

    @extend_schema(responses={200: IntentSerializer(many=True)})
    def list(self, request):
        """Every intent of the project, by name."""
        rows = selectors.intents_for_project(project_id=request.kairos_project_id)
        return Response(IntentSerializer(rows, many=True).data)

    @extend_schema(responses={200: IntentSerializer})
    def retrieve(self, request, key=None):
        return Response(IntentSerializer(self._intent(request, key)).data)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: IntentSerializer})
    def create(self, request):
        """`{"name", "examples": [3 to 20 phrases], "key"?, "threshold"?}`; the key defaults to the name
        in lowercase with hyphens. Scoring everyone starts at once (seconds to minutes)."""
        try:
            body = self._body(request)
            intent = services.intent_create(project_id=request.kairos_project_id, by=request.user, **body)
        except services.SegmentsError as exc:
            raise _bad(exc.field, exc.message) from exc
        return Response(IntentSerializer(intent).data, status=201)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: IntentSerializer})
    def partial_update(self, request, key=None):
        """Change any of name, key, examples, threshold."""
        intent = self._intent(request, key)
        try:
            intent = services.intent_update(intent=intent, by=request.user, **self._body(request))
        except services.SegmentsError as exc:
            raise _bad(exc.field, exc.message) from exc
        return Response(IntentSerializer(intent).data)

    def destroy(self, request, key=None):
        """Delete the intent and everyone's scores on it."""
        services.intent_delete(intent=self._intent(request, key), by=request.user)
        return Response(status=204)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"], url_path="preview")
    def preview(self, request):
        """A draft `{"name", "examples", "threshold"?}` before saving: the project's real texts nearest
        to it (`nearest`: text and score) and how many people would score at or above the threshold."""
        body = self._body(request)
        try:
            result = services.intent_preview(
                project_id=request.kairos_project_id,
                name=body.get("name"),
                examples=body.get("examples"),
                threshold=body.get("threshold"),
            )
        except services.SegmentsError as exc:
            raise _bad(exc.field, exc.message) from exc
        return Response(result)
