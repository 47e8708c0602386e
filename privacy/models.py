"""Data subject requests, the suppression list of erased subjects, and each project's privacy settings."""

from django.conf import settings
from django.db import models


class RequestKind(models.TextChoices):
    ACCESS = "access", "Access / portability (Art. 15/20)"
    ERASURE = "erasure", "Erasure (Art. 17)"
    OBJECTION = "objection", "Objection to profiling (Art. 21)"
    RESTRICTION = "restriction", "Restriction of processing (Art. 18)"


class Regime(models.TextChoices):
    GDPR = "gdpr", "GDPR"
    CCPA = "ccpa", "CCPA / CPRA"


class RequestStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    VERIFIED = "verified", "Verified"
    PROCESSING = "processing", "Processing"
    COMPLETED = "completed", "Completed"
    REJECTED = "rejected", "Rejected"


class DataSubjectRequest(models.Model):
    """A person's request about their data: who they are, what they asked, by when, and the proof."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="privacy_requests")
    kind = models.CharField(max_length=12, choices=RequestKind.choices)
    regime = models.CharField(max_length=4, choices=Regime.choices, default=Regime.GDPR)
    status = models.CharField(max_length=12, choices=RequestStatus.choices, default=RequestStatus.RECEIVED)
    # The identifiers as given ({"user_id", "anonymous_id", "email"}); blanked once an erasure is
    # verified, when only `subject_digest` remains.
    identifiers = models.JSONField(default=dict, blank=True)
    subject_digest = models.CharField(max_length=64, db_index=True)
    verification = models.TextField(blank=True, default="", help_text="How the subject's identity was verified.")
    source = models.CharField(max_length=10, default="dashboard")
    external_ref = models.CharField(max_length=120, blank=True, default="")
    received_at = models.DateTimeField()
    due_at = models.DateTimeField()
    confirm_by = models.DateTimeField(null=True, blank=True, help_text="CCPA: confirm receipt by this date.")
    extended_at = models.DateTimeField(null=True, blank=True)
    extension_reason = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # The profiles and unit ids the job works on, fixed when it starts so a re-run after a crash
    # finds them even when the identities are already gone.
    subject = models.JSONField(default=dict, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    progress_step = models.CharField(max_length=120, blank=True, default="")
    certificate = models.JSONField(default=dict, blank=True)
    export_path = models.CharField(max_length=255, blank=True, default="")
    export_expires_at = models.DateTimeField(null=True, blank=True)
    restriction_lifted_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True, default="")
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["due_at"]
        indexes = [models.Index(fields=["project", "status", "due_at"], name="dsr_queue")]

    def __str__(self) -> str:
        return f"DSR-{self.pk} {self.kind}"

    @property
    def reference(self) -> str:
        return f"DSR-{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.status not in {RequestStatus.COMPLETED, RequestStatus.REJECTED}

    @property
    def progress_percent(self) -> int:
        if not self.progress_total:
            return 100 if self.status == RequestStatus.COMPLETED else 0
        return min(100, round(100 * self.progress_done / self.progress_total))


class Suppression(models.Model):
    """An erased subject's identifier, as an HMAC keyed with a secret kept out of the database:
    events and decide calls for it are dropped, so the subject is never profiled again."""

    project = models.ForeignKey("personalization.Project", on_delete=models.CASCADE, related_name="suppressions")
    digest = models.CharField(max_length=64)
    request = models.ForeignKey(DataSubjectRequest, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "digest"], name="suppression_unique_digest")]

    def __str__(self) -> str:
        return self.digest[:12]


class PrivacySettings(models.Model):
    """A project's consent, Global Privacy Control and retention choices."""

    project = models.OneToOneField("personalization.Project", on_delete=models.CASCADE, related_name="privacy")
    require_consent = models.BooleanField(
        default=False, help_text="Personalize only people who consented (opt-in), via the API or the snippet."
    )
    honor_gpc = models.BooleanField(
        default=True, help_text="Treat the browser's Global Privacy Control signal (Sec-GPC: 1) as an opt-out."
    )
    event_retention_days = models.PositiveIntegerField(
        default=395, help_text="Raw events older than this are deleted every night (0 keeps them forever)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"privacy settings of {self.project_id}"
