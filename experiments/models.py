"""Lift reports: one computed comparison of treatment vs holdout, kept so pages load instantly."""

from datetime import UTC, timedelta

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models


class ReportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class LiftReport(models.Model):
    """A per-segment lift decomposition for the global holdout or one experience, over a time range."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="lift_reports")
    # Empty: the global holdout (all personalization vs none); otherwise an experience key.
    experience_key = models.CharField(max_length=64, blank=True, default="")
    segment_by = models.CharField(max_length=80, default="exposure:segment")
    comparison = models.CharField(max_length=10, default="holdout")
    correction = models.CharField(max_length=4, default="bh")
    # Leave out people with no value for the breakdown ("(none)"): from the totals and the test family.
    exclude_missing = models.BooleanField(default=False)
    start = models.DateTimeField()
    end = models.DateTimeField()
    # The range as asked: "days:14" (up to the time of asking), "dates:2011-03-01..2011-04-30", or
    # "exposures" (the experience's own first to last exposure, found when the report runs).
    span = models.CharField(max_length=40, default="", blank=True)
    # What the drain had stored when the report ran (personalization's stored version): a report is
    # reused only while it is unchanged.
    data_version = models.CharField(max_length=64, default="", blank=True)
    status = models.CharField(max_length=8, choices=ReportStatus.choices, default=ReportStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_label = models.CharField(max_length=80, blank=True, default="")
    error = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["project", "experience_key", "-created_at"], name="lift_report_latest")]

    def __str__(self) -> str:
        return f"lift {self.experience_key or 'global'} by {self.segment_by} ({self.status})"

    @property
    def range_label(self) -> str:
        """The range covered, in whole UTC days, both included (`end` itself is excluded)."""
        last = self.end - timedelta(microseconds=1) if self.end > self.start else self.end
        return f"{self.start.astimezone(UTC):%Y-%m-%d} to {last.astimezone(UTC):%Y-%m-%d}"


class MetricKind(models.TextChoices):
    CONVERSION = "conversion", "Conversion (did it happen in the window)"
    REVENUE = "revenue", "Revenue per user (sum of value)"
    RETENTION = "retention", "Retention (came back between two days)"
    TIME_TO_CONVERSION = "time_to_conversion", "Time to conversion (hours, capped at the window)"
    RATIO = "ratio", "Ratio (total of one over total of another)"
    COUNT = "count", "Count (events per user)"


class RatioPart(models.TextChoices):
    COUNT = "count", "number of events"
    SUM = "sum", "sum of value"
    SESSIONS = "sessions", "number of sessions"


class Metric(models.Model):
    """One way to measure an experiment's outcome, defined once per project and used by every report."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="metrics")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=20, choices=MetricKind.choices)
    # Which events count. Empty: the experience's own goal (conversion), any event with a value
    # (revenue), any event at all (count, retention, time to conversion: the experience's goal).
    event_types = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    # [exposure, exposure + window_days) for every kind but retention.
    window_days = models.PositiveSmallIntegerField(default=7)
    # Retention: came back on days return_from_day..return_to_day after first exposure (both included).
    return_from_day = models.PositiveSmallIntegerField(default=8)
    return_to_day = models.PositiveSmallIntegerField(default=30)
    # Revenue, count and ratio parts: per-user values above this percentile of all exposed users
    # (zeros included) are capped at it, so one whale cannot decide a test. Null: no cap.
    winsorize_percentile = models.FloatField(null=True, blank=True)
    numerator_event_types = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    numerator_part = models.CharField(max_length=8, choices=RatioPart.choices, default=RatioPart.SUM)
    denominator_event_types = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    denominator_part = models.CharField(max_length=8, choices=RatioPart.choices, default=RatioPart.SESSIONS)
    # False for metrics where less is better (refunds, unsubscribes, time to conversion): a guardrail
    # "gets worse" in the direction this says is bad.
    higher_is_better = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Where the drain keeps this metric's per-exposure values (personalization's Exposure.metric_values),
    # a small number unique in the project; free slots are reused by new metrics.
    values_slot = models.PositiveSmallIntegerField(null=True, blank=True)
    # The definition (values_definition) the kept values are complete for: set by the backfill job when
    # it has gone over every exposure. Until then, reports compute the metric from the events.
    values_for = models.JSONField(null=True, blank=True)
    # The running backfill's progress in percent; null when none is running. values_progress_at: when a
    # job last moved it (queued, or a chunk done): a job that stopped moving was lost (a broker that lost
    # its queue) and is queued again (metric_services.metric_values_resume).
    values_progress = models.PositiveSmallIntegerField(null=True, blank=True)
    values_progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="metric_unique_key"),
            models.UniqueConstraint(fields=["project", "values_slot"], name="metric_unique_values_slot"),
        ]
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name

    def spec(self) -> dict:
        """What the SQL and the statistics need of this metric, as plain data (no model crosses an app)."""
        return {
            "key": self.key,
            "name": self.name,
            "kind": self.kind,
            "event_types": list(self.event_types),
            "window_days": self.window_days,
            "return_from_day": self.return_from_day,
            "return_to_day": self.return_to_day,
            "winsorize_percentile": self.winsorize_percentile,
            "numerator_event_types": list(self.numerator_event_types),
            "numerator_part": self.numerator_part,
            "denominator_event_types": list(self.denominator_event_types),
            "denominator_part": self.denominator_part,
            "higher_is_better": self.higher_is_better,
            "values_slot": self.values_slot,
            "values_ready": self.values_slot is not None and self.values_for == self.values_definition(),
        }

    def values_definition(self) -> dict:
        """The fields the kept per-exposure values depend on (the cap, name and direction are read by
        the report itself): when they change, the values are computed again."""
        return {
            "kind": self.kind,
            "event_types": sorted(self.event_types),
            "window_days": self.window_days,
            "return_from_day": self.return_from_day,
            "return_to_day": self.return_to_day,
            "numerator_event_types": sorted(self.numerator_event_types),
            "numerator_part": self.numerator_part,
            "denominator_event_types": sorted(self.denominator_event_types),
            "denominator_part": self.denominator_part,
        }


class ExperienceMetrics(models.Model):
    """The metrics a lift report of one experience (or, with an empty key, of the global holdout) shows.

    Kept here, keyed by the experience's key, rather than on personalization's Experience: that app
    must not know the experiments app exists, and external experiences have no Experience row."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="+")
    experience_key = models.CharField(max_length=64, blank=True, default="")
    primary = models.ForeignKey(Metric, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    secondary = models.ManyToManyField(Metric, blank=True, related_name="+")
    guardrails = models.ManyToManyField(Metric, blank=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "experience_key"], name="experience_metrics_unique_key")
        ]

    def __str__(self) -> str:
        return f"metrics of {self.experience_key or 'global holdout'}"
