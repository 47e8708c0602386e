"""Experiences, their variants, bandit weights and exposures."""

from django.contrib.postgres.fields import ArrayField
from django.db import models

from personalization.experiences.thompson import DEFAULT_FLOOR
from personalization.models.people import Profile
from personalization.models.workspace import Project, new_salt


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
    # targeting["conditions"] as compiled when saved (experiences/conditions.py), what the snapshot
    # carries; NULL without conditions. The text stays in targeting, as the marketer wrote it.
    conditions = models.JSONField(null=True, blank=True)
    goal_event = models.CharField(max_length=64, default="purchase")
    attribution_hours = models.PositiveIntegerField(default=72)
    holdout_share = models.FloatField(default=0.0, help_text="Share of users held out of this experience.")
    salt = models.CharField(max_length=32, default=new_salt)
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
    """A person's first exposure to an experience: from decide, or an `exposure` event sent from outside.

    Partitioned by month on `exposed_at` (migration 0013), primary key (id, exposed_at) in SQL; one
    row per (project, experience, person) is kept by ExposureClaim.
    """

    # No single-column indexes: exposure_experience_time leads with project, exposure_profile covers profile.
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
    # What decide knew of the visitor's live state at exposure, in every arm: {"stage", "visitor",
    # "first_touch", "tenure_days", "device", and each fact the experience's conditions read}. NULL: not known
    # (recorded before live state was kept, sent from outside, or decide answered without Redis).
    live = models.JSONField(null=True, blank=True)
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
    # Every metric's per-exposure aggregates, kept by the drain so reports need not scan events
    # (personalization/experiences/metric_values.py); a metric's slot is experiments' Metric.values_slot.
    metric_values = ArrayField(models.FloatField(null=True), null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "experience_key", "exposed_at"], name="exposure_experience_time"),
            models.Index(fields=["profile"], name="exposure_profile"),
        ]

    def __str__(self) -> str:
        return f"{self.experience_key}:{self.variant_key or self.arm}"


class ExposureClaim(models.Model):
    """That a person has their (first) exposure to an experience stored: the unique key the
    partitioned exposures table cannot have. Written with the exposure, in its transaction.

    Keyed (project, profile, experience): the same set of columns the exposures' old unique key had,
    ordered so a person's claims are one range of the key (erasure, merges)."""

    pk = models.CompositePrimaryKey("project_id", "profile_id", "experience_key")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, db_index=False)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, db_index=False)
    experience_key = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"{self.profile_id}:{self.experience_key}"
