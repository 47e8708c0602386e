"""People: profiles, their identities and their events."""

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q

from personalization.models.workspace import Project


class Profile(models.Model):
    """One end user of the customer's site: identities, zero-party attributes, consent, activity."""

    # No index of its own: profile_project_last_seen leads with the project. A fourth index on a row the
    # drain rewrites for every person of a step (last_seen is indexed, so no update is HOT) cost it for nothing.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="profiles", db_index=False)
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

    # No single-column indexes: identity_unique_value leads with the project and identity_profile is
    # the profile's. A project-only index was what the planner chose, with statistics that did not yet
    # know a freshly imported project, to answer the drain's lookup of a batch's ids: a scan of the
    # project's every identity per batch (seconds at 300k people) instead of one index probe per id.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, db_index=False)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="identities", db_index=False)
    kind = models.CharField(max_length=4, choices=IdentityKind.choices)
    value = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "kind", "value"], name="identity_unique_value")]
        indexes = [models.Index(fields=["profile"], name="identity_profile")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class Event(models.Model):
    """A behavior event, stored once per (project, client event_id) by the stream drain.

    Partitioned by month on `ts` (migration 0013; personalization/ingest/partitions.py): in SQL the
    primary key is (id, ts), as PostgreSQL wants the partition key in every unique key; `id` alone
    still comes from one sequence, so Django keeps it as the primary key. Once per (project,
    event_id) is kept by EventClaim, which a partitioned table cannot hold as a unique index.
    """

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


class EventClaim(models.Model):
    """That a project stored a client event id: the unique key the partitioned events table cannot have.

    Written by the events table's statement trigger from the rows each insert writes (migration
    0013), so no writer can store an event without its claim, and an id already claimed fails the
    insert (the drain then stores the batch without it). Not partitioned, so one event id sent again a
    month later (a retry stamped with the server's time, a history import run twice) meets its claim
    whatever its `ts`.
    `ts` is the stored event's, so retention can forget the claims of the months it drops.
    """

    pk = models.CompositePrimaryKey("project_id", "event_id")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, db_index=False)
    event_id = models.CharField(max_length=64)
    ts = models.DateTimeField()

    class Meta:
        indexes = [BrinIndex(fields=["ts"], name="event_claim_ts_brin")]

    def __str__(self) -> str:
        return self.event_id
