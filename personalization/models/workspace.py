"""Projects, their members, API keys and the audit trail."""

import secrets

from django.conf import settings
from django.db import models


def new_salt() -> str:
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
    holdout_salt = models.CharField(max_length=32, default=new_salt)

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
