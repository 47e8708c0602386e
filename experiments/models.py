"""Lift reports: one computed comparison of treatment vs holdout, kept so pages load instantly."""

from datetime import UTC, timedelta

from django.conf import settings
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
