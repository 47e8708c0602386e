"""Projects, members and keys; profiles, their identities and their events."""

import secrets

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q

from personalization.bandit import DEFAULT_FLOOR


def _new_salt() -> str:
    return secrets.token_hex(8)


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MARKETER = "marketer", "Marketer"
    ANALYST = "analyst", "Analyst"
    COMPLIANCE = "compliance", "Compliance"
    DEVELOPER = "developer", "Developer"


class Project(models.Model):
    """A workspace: one customer site or app with its members, keys, profiles and experiences."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    global_holdout_share = models.FloatField(default=0.05)
    # Salt of the global holdout hash; independent of every experience's salt.
    holdout_salt = models.CharField(max_length=32, default=_new_salt)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A person's role in a project; the role decides which pages and actions they get."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MARKETER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")]

    def __str__(self) -> str:
        return f"{self.user} · {self.role} · {self.project}"


class KeyKind(models.TextChoices):
    PUBLIC = "public", "Public (decide and events, safe in a web page)"
    SECRET = "secret", "Secret (REST API)"


class ApiKey(models.Model):
    """An API key, stored only as a SHA-256 hash; the raw key is shown once when created."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    kind = models.CharField(max_length=10, choices=KeyKind.choices)
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise the key.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Profile(models.Model):
    """One end user of the customer's site: identities, zero-party attributes, consent, activity."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="profiles")
    external_id = models.CharField(max_length=128, null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    consent = models.JSONField(default=dict, blank=True, help_text="Purpose → granted, e.g. {'personalization': true}")
    do_not_personalize = models.BooleanField(default=False)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"],
                condition=Q(external_id__isnull=False),
                name="profile_unique_external_id",
            )
        ]
        indexes = [models.Index(fields=["project", "last_seen"], name="profile_project_last_seen")]

    def __str__(self) -> str:
        return self.external_id or f"anonymous #{self.pk}"


class IdentityKind(models.TextChoices):
    USER = "user", "User id"
    ANONYMOUS = "anon", "Anonymous id"


class ProfileIdentity(models.Model):
    """An id the site knows a profile by: its user id or one of its anonymous (device) ids."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="identities")
    kind = models.CharField(max_length=4, choices=IdentityKind.choices)
    value = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "kind", "value"], name="identity_unique_value")]
        indexes = [models.Index(fields=["profile"], name="identity_profile")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class Event(models.Model):
    """A behavior event, stored once per (project, client event_id) by the stream drain."""

    id = models.BigAutoField(primary_key=True)
    # No single-column indexes: the composite ones below lead with these columns, and at tens of
    # millions of rows every extra index slows the drain (bench/events_scale.py).
    project = models.ForeignKey(Project, on_delete=models.CASCADE, db_index=False)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, db_index=False)
    event_id = models.CharField(max_length=64)
    type = models.CharField(max_length=64)
    ts = models.DateTimeField()
    session_id = models.CharField(max_length=64, blank=True, default="")
    value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "event_id"], name="event_unique_client_id")]
        indexes = [
            # per-profile reads and erasure
            models.Index(fields=["profile", "ts"], name="event_profile_ts"),
            # time-range scans per project and per event type (conversions, charts, reports)
            models.Index(fields=["project", "type", "ts"], name="event_project_type_ts"),
            # whole-project time ranges (retention, charts); rows arrive roughly in time order
            BrinIndex(fields=["ts"], name="event_ts_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class ExperienceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    # Analysis only: assigned by another tool, which sends the exposures. Decide never serves it.
    EXTERNAL = "external", "External (analysis only)"


class Policy(models.TextChoices):
    FIXED = "fixed", "Fixed split"
    BANDIT = "bandit", "Thompson sampling bandit"
    SEGMENT_BANDIT = "segment_bandit", "Per-segment Thompson sampling"


class Experience(models.Model):
    """Variants of content at a touchpoint, with targeting, a goal and an allocation policy."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="experiences")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=120)
    touchpoint = models.CharField(max_length=120, help_text="Where it shows, e.g. “homepage hero”.")
    status = models.CharField(max_length=12, choices=ExperienceStatus.choices, default=ExperienceStatus.DRAFT)
    policy = models.CharField(max_length=16, choices=Policy.choices, default=Policy.FIXED)
    # Default chosen with bench/bandit_sim.py: 0.005 keeps regret ~1.1x an ideal sampler; 0.05 is 3.5x.
    bandit_floor = models.FloatField(default=DEFAULT_FLOOR, help_text="Minimum share of traffic per variant.")
    bandit_burn_in = models.PositiveIntegerField(default=100, help_text="Exposures per variant before reweighting.")
    # Until behavior segments exist, a segment is a profile attribute, e.g. "device" or "intent".
    segment_attribute = models.CharField(max_length=64, blank=True, default="")
    targeting = models.JSONField(default=dict, blank=True)
    goal_event = models.CharField(max_length=64, default="purchase")
    attribution_hours = models.PositiveIntegerField(default=72)
    holdout_share = models.FloatField(default=0.0, help_text="Share of users held out of this experience.")
    salt = models.CharField(max_length=32, default=_new_salt)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="experience_unique_key")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Variant(models.Model):
    """One version of the content: its payload is what the site shows."""

    experience = models.ForeignKey(Experience, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=120)
    payload = models.JSONField(default=dict, blank=True)
    is_control = models.BooleanField(default=False, help_text="The default, shown to holdouts and misses.")
    weight = models.FloatField(default=1.0, help_text="Share under a fixed split (normalised).")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["experience", "key"], name="variant_unique_key")]
        ordering = ["position", "pk"]

    def __str__(self) -> str:
        return f"{self.experience.key}/{self.key}"


class BanditWeights(models.Model):
    """One bandit update: posteriors and allocation weights of an experience (per segment), kept as history."""

    experience = models.ForeignKey(Experience, on_delete=models.CASCADE, related_name="weight_history")
    segment = models.CharField(max_length=64, blank=True, default="")
    computed_at = models.DateTimeField(db_index=True)
    weights = models.JSONField(help_text="variant key → share of new traffic")
    stats = models.JSONField(help_text="variant key → [exposures, conversions]")

    class Meta:
        indexes = [models.Index(fields=["experience", "segment", "computed_at"], name="bandit_weights_history")]

    def __str__(self) -> str:
        return f"{self.experience.key} {self.segment or 'all'} @ {self.computed_at:%H:%M:%S}"


class Arm(models.TextChoices):
    VARIANT = "variant", "Variant"
    HOLDOUT_GLOBAL = "holdout_global", "Global holdout"
    HOLDOUT_EXPERIENCE = "holdout_experience", "Experience holdout"


class Exposure(models.Model):
    """A person's first exposure to an experience: from decide, or an `exposure` event sent from outside."""

    # No single-column indexes: exposure_unique_first leads with project, exposure_profile covers profile.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, db_index=False)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, db_index=False)
    # A key, not a foreign key: campaigns assigned outside Kairos are analysed the same way.
    experience_key = models.CharField(max_length=64)
    variant_key = models.CharField(max_length=64, blank=True, default="")
    arm = models.CharField(max_length=20, choices=Arm.choices, default=Arm.VARIANT)
    reason = models.CharField(max_length=24, blank=True, default="")
    segment = models.CharField(max_length=64, blank=True, default="")
    # The unit's behavior-segment keys at exposure (the unit hash's "segs": clustering-run, rule and
    # lookalike segments), in every arm, so lift can break down by them. Empty: in no segment;
    # NULL: not known (recorded before segments were kept, or decide answered without Redis).
    behavior_segments = ArrayField(models.CharField(max_length=64), null=True, blank=True)
    exposed_at = models.DateTimeField()
    source = models.CharField(max_length=8, default="decide")
    # Outcomes, kept up to date by the drain as events arrive, so reports and bandits aggregate one
    # table: the goal event within the attribution window after exposure, and purchase revenue in it.
    goal = models.CharField(max_length=64, default="purchase")
    window_hours = models.PositiveIntegerField(default=72)
    converted = models.BooleanField(default=False)
    conversions = models.PositiveIntegerField(default=0)
    # float8, not numeric: reports sum it (and its square) over millions of rows, and casting numeric
    # to float8 per row was the largest cost of a lift report (bench/lift.py).
    revenue = models.FloatField(default=0)
    # CUPED covariate: the person's activity (events) in the 14 days before exposure.
    pre_activity = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "experience_key", "profile"], name="exposure_unique_first")
        ]
        indexes = [
            models.Index(fields=["project", "experience_key", "exposed_at"], name="exposure_experience_time"),
            models.Index(fields=["profile"], name="exposure_profile"),
        ]

    def __str__(self) -> str:
        return f"{self.experience_key}:{self.variant_key or self.arm}"


class AuditEntry(models.Model):
    """Who changed what in a project's configuration (experiences, keys, holdouts)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="audit_entries")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=40)
    object_type = models.CharField(max_length=40)
    object_key = models.CharField(max_length=120)
    changes = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_key}"


class DeadLetter(models.Model):
    """An accepted event the drain could not store, kept with the error until an admin retries or deletes it.

    Personal data (ids and properties of a visitor): listed in privacy.registry, found by user_id or
    anonymous_id. Text is stored escaped (NUL as \\u0000), since what PostgreSQL refused is the point."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, null=True, blank=True, related_name="dead_letters")
    event_id = models.CharField(max_length=64, blank=True, default="")
    user_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    anonymous_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    # The event as the stream held it (JSON, NUL escaped), or its repr when it is not even JSON.
    payload = models.TextField()
    error = models.TextField()
    received_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A drain that dies after writing dead letters but before acknowledging writes them again.
            models.UniqueConstraint(
                fields=["project", "event_id"], condition=~Q(event_id=""), name="deadletter_unique_event"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_id or '?'}: {self.error[:60]}"
