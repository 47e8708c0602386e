"""Behavior embeddings, clustering runs, segments (behavior, lookalike, rule) and their memberships."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from pgvector.django import HnswIndex, VectorField

from personalization.segment_keys import run_prefix
from segments.embedding import DIMS

# The text encoder's width (segments/text_encoder.py, use-multilingual-v3); a vector names its encoder.
TEXT_DIMS = 512


class EmbedderVersion(models.Model):
    """One fitted embedder (its basis), kept so vectors can be traced to the basis that made them."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=40)
    version = models.PositiveIntegerField()
    state = models.BinaryField()
    dims = models.PositiveSmallIntegerField(default=DIMS)
    profiles = models.PositiveIntegerField(default=0)
    features = models.PositiveIntegerField(default=0)
    fitted_at = models.DateTimeField()
    # The window, minimum of events and half-life it was fitted with (fold-in uses the same), and how
    # many people were left out and why: {"window_days", "min_events", "left_out": {...}, ...}.
    coverage = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="embedder_unique_version")]

    def __str__(self) -> str:
        return f"{self.kind} v{self.version}"


class ProfileEmbedding(models.Model):
    """A profile's behavior vector (unit length), from the embedder version it names.

    Not unique per profile on purpose: when identities stitch two profiles, the privacy registry moves
    rows to the surviving profile, and the next fold-in replaces both with one.
    """

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+", db_index=False)
    profile = models.ForeignKey("personalization.Profile", on_delete=models.CASCADE, related_name="+")
    embedder_version = models.PositiveIntegerField()
    vector = VectorField(dimensions=DIMS)
    events = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["project", "profile"], name="embedding_project_profile"),
            # cosine HNSW: lookalike queries. m/ef_construction as measured in bench/segments.py.
            HnswIndex(
                name="embedding_vector_hnsw",
                fields=["vector"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"embedding of profile {self.profile_id}"


class TextEmbedding(models.Model):
    """A text's vector from one encoder, keyed by the SHA-256 of its normalised form: queries, titles and
    names repeat across people, so each is encoded once. Holds no text and no link to a person."""

    encoder = models.CharField(max_length=40)
    digest = models.BinaryField(max_length=32)
    vector = VectorField(dimensions=TEXT_DIMS)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["encoder", "digest"], name="text_embedding_unique_digest")]

    def __str__(self) -> str:
        return f"{self.encoder} vector of {bytes(self.digest).hex()[:12]}"


class ProfileMeaning(models.Model):
    """A profile's meaning vector: the recency-weighted mean of its texts' vectors (unit length).

    Not unique per profile for the reason ProfileEmbedding is not: a stitch moves rows first."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+", db_index=False)
    profile = models.ForeignKey("personalization.Profile", on_delete=models.CASCADE, related_name="+")
    encoder = models.CharField(max_length=40)
    vector = VectorField(dimensions=TEXT_DIMS)
    texts = models.PositiveIntegerField(default=0, help_text="distinct texts the vector was made from")
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["project", "profile"], name="meaning_project_profile")]

    def __str__(self) -> str:
        return f"meaning of profile {self.profile_id}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ClusteringRun(models.Model):
    """One k-means clustering of a project's embeddings; its segments appear only when it is done."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+")
    k_requested = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty: chosen automatically.")
    k = models.PositiveSmallIntegerField(null=True, blank=True)
    k_scores = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_label = models.CharField(max_length=120, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    embedder_version = models.PositiveIntegerField(null=True, blank=True)
    # Share of meaning (text vectors) in the similarity the run clustered on; 0: behavior alone.
    meaning_weight = models.FloatField(default=0.0)
    profiles = models.PositiveIntegerField(default=0)
    inertia = models.FloatField(null=True, blank=True)
    silhouette = models.FloatField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"run #{self.pk} ({self.status})"

    @property
    def key_prefix(self) -> str:
        """Segment keys of this run start with it; decide's per-segment bandit finds the run by it."""
        return run_prefix(self.pk)


class SegmentKind(models.TextChoices):
    BEHAVIOR = "behavior", "Behavior (clustering)"
    LOOKALIKE = "lookalike", "Lookalike"
    RULE = "rule", "Rule"


class Segment(models.Model):
    """A named audience decide can target: a behavior cluster, a lookalike or a rule."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+")
    key = models.SlugField(max_length=64)
    kind = models.CharField(max_length=10, choices=SegmentKind.choices)
    run = models.ForeignKey(ClusteringRun, null=True, blank=True, on_delete=models.CASCADE, related_name="segments")
    index = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=120)
    suggested_name = models.CharField(max_length=120, blank=True, default="")
    size = models.PositiveIntegerField(default=0)
    conversion_rate = models.FloatField(default=0)
    value_per_profile = models.FloatField(default=0)
    card = models.JSONField(default=dict, blank=True, help_text="over-indexing features, behaviors more/less")
    definition = models.JSONField(default=dict, blank=True, help_text="rule conditions or lookalike parameters")
    centroid = VectorField(dimensions=DIMS, null=True, blank=True)
    # A run with meaning: the center's meaning part and the behavior part's share of the center's length
    # (segments/meaning.py split_center), so fold-in places people as the run did.
    meaning_centroid = VectorField(dimensions=TEXT_DIMS, null=True, blank=True)
    behavior_share = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="segment_unique_key")]
        ordering = ["run_id", "index", "name"]

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    """A profile in a segment (score: similarity for lookalikes, 1 otherwise). Not unique per
    (segment, profile): see ProfileEmbedding on stitched profiles."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    profile = models.ForeignKey("personalization.Profile", on_delete=models.CASCADE, related_name="+")
    score = models.FloatField(default=1.0)

    class Meta:
        indexes = [models.Index(fields=["segment", "profile"], name="membership_segment_profile")]

    def __str__(self) -> str:
        return f"{self.profile_id} in {self.segment_id}"


class MapPoint(models.Model):
    """One profile of a run's 2-D map sample: a row per person (not a blob), so opting out or erasure
    takes the person off every map, and the privacy registry finds it."""

    run = models.ForeignKey(ClusteringRun, on_delete=models.CASCADE, related_name="points", db_index=False)
    profile = models.ForeignKey("personalization.Profile", on_delete=models.CASCADE, related_name="+")
    x = models.FloatField()
    y = models.FloatField()
    index = models.PositiveSmallIntegerField(help_text="the segment's index in its run")

    class Meta:
        indexes = [models.Index(fields=["run", "profile"], name="mappoint_run_profile")]

    def __str__(self) -> str:
        return f"{self.profile_id} on the map of run {self.run_id}"


class MembershipPublish(models.Model):
    """Profiles whose decide "segs" field must be rewritten from the membership table (an outbox).

    Written in the transaction that changes their memberships and deleted once Redis has them, so a
    worker killed between the commit and the end of the publish leaves this row behind, and
    `memberships_publish_resume` finishes it (from `done` on) instead of decide serving half a change.
    """

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+")
    profile_ids = ArrayField(models.BigIntegerField())
    done = models.PositiveIntegerField(default=0, help_text="profile_ids[:done] are published")
    heartbeat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"publish of {len(self.profile_ids)} profiles ({self.done} done)"


class ScoreRun(models.Model):
    """One retrain of a project's predictive scores: each model judged on held-out people before it
    is promoted, then everyone scored with the models in use.

    `results` per score: {"horizon_days", "note" (why the horizon was shortened), "figures" (held-out
    evaluation), "comparison" (against the model in use, same people), "promoted", "reason",
    "model" (segments/scoring.py JSON), "drivers"}. The model in use for a score is the one of the
    latest done run that promoted it.
    """

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+")
    goal = models.CharField(max_length=64, default="purchase")
    horizons = models.JSONField(default=dict, help_text="score -> days ahead it predicts")
    placebo = models.BooleanField(default=False, help_text="trained on shuffled labels: a check that the gate works")
    status = models.CharField(max_length=8, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_label = models.CharField(max_length=120, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    clock = models.DateTimeField(null=True, blank=True, help_text="the moment scores are as of")
    results = models.JSONField(default=dict, blank=True)
    scored = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"score run #{self.pk} ({self.status})"


class LookalikeBuild(models.Model):
    """A lookalike being built by a worker (at a million people it outlasts a web request); its segment
    appears when it is done. The seed is kept as chosen, so a retry builds the same lookalike."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=120)
    key = models.CharField(max_length=64, blank=True, default="")
    size = models.PositiveIntegerField()
    seed_weights = models.JSONField(default=dict, help_text="profile id -> weight")
    seed_description = models.JSONField(default=dict)
    status = models.CharField(max_length=8, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_label = models.CharField(max_length=120, blank=True, default="")
    error = models.TextField(blank=True, default="")
    segment = models.ForeignKey("Segment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"lookalike build #{self.pk} ({self.status})"


class ProfileScore(models.Model):
    """A profile's predictive scores and its top percent on each (None: no model in use for that score).
    Replaced at each retrain; not unique per profile for the same reason as ProfileEmbedding."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+", db_index=False)
    profile = models.ForeignKey("personalization.Profile", on_delete=models.CASCADE, related_name="+")
    likely_to_buy = models.FloatField(null=True)
    likely_to_buy_top = models.FloatField(null=True)
    expected_revenue = models.FloatField(null=True)
    expected_revenue_top = models.FloatField(null=True)
    lapse_risk = models.FloatField(null=True)
    lapse_risk_top = models.FloatField(null=True)
    run_id = models.PositiveIntegerField()
    scored_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["project", "profile"], name="score_project_profile")]

    def __str__(self) -> str:
        return f"scores of profile {self.profile_id}"


class Intent(models.Model):
    """A named intent: a need in plain words with example phrases, scored for every profile from its texts.
    The prototype is encoded when the intent is saved (segments/intents.py), by the rule named in `rule`: one
    saved under an older rule is encoded again before the next scoring (segments/services/intents.py)."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+")
    key = models.SlugField(max_length=48, help_text="the name conditions use: intent planning-a-trip >= 0.35")
    name = models.CharField(max_length=80)
    examples = ArrayField(models.CharField(max_length=200))
    threshold = models.FloatField(default=0.35)
    encoder = models.CharField(max_length=40)
    prototype = VectorField(dimensions=TEXT_DIMS)
    # segments/intents.py RULE at the time the prototype was made; "" for intents saved before rules had names.
    rule = models.CharField(max_length=40, default="", blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="intent_unique_key")]

    def __str__(self) -> str:
        return f"intent {self.key}"


class ProfileIntent(models.Model):
    """A profile's score on one intent and the (up to three) texts of its events that drove it.
    Replaced whenever the profile is scored; not unique per profile for the same reason as ProfileEmbedding."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+", db_index=False)
    profile = models.ForeignKey("personalization.Profile", on_delete=models.CASCADE, related_name="+")
    intent = models.ForeignKey(Intent, on_delete=models.CASCADE, related_name="+", db_index=False)
    score = models.FloatField()
    phrases = ArrayField(models.CharField(max_length=200), default=list)
    scored_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["project", "profile"], name="intent_project_profile"),
            models.Index(fields=["intent", "score"], name="intent_score"),
        ]

    def __str__(self) -> str:
        return f"intent {self.intent_id} of profile {self.profile_id}"
