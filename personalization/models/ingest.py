"""What the drain could not store."""

from django.db import models
from django.db.models import Q

from personalization.models.workspace import Project


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
