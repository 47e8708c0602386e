"""Retention, housekeeping and the record of processing activities (Art. 30), generated from the registry."""

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from personalization import services as subject_data
from personalization.services import audit_record
from privacy import registry
from privacy.models import DataSubjectRequest, PrivacySettings, Suppression
from privacy.selectors import privacy_settings_get, suppression_digests
from privacy.services.requests import RequestError

MAX_RETENTION_DAYS = 3650


def privacy_settings_set(
    *,
    project_id: int,
    require_consent: bool,
    honor_gpc: bool,
    event_retention_days: object,
    by: AbstractBaseUser | None,
) -> PrivacySettings:
    try:
        days = int(event_retention_days)
    except (TypeError, ValueError):
        raise RequestError("event_retention_days", "give a whole number of days, e.g. 395 (0 keeps events)") from None
    if not 0 <= days <= MAX_RETENTION_DAYS:
        raise RequestError("event_retention_days", f"must be between 0 (keep forever) and {MAX_RETENTION_DAYS}")
    current = privacy_settings_get(project_id=project_id)
    before = {f: getattr(current, f) for f in ("require_consent", "honor_gpc", "event_retention_days")}
    current.require_consent, current.honor_gpc, current.event_retention_days = require_consent, honor_gpc, days
    current.save()
    after = {f: getattr(current, f) for f in before}
    changes = {f: [before[f], after[f]] for f in before if before[f] != after[f]}
    if changes:
        audit_record(
            project_id=project_id,
            actor=by,
            action="update",
            object_type="privacy_settings",
            object_key=str(project_id),
            changes=changes,
        )
    subject_data.snapshot_publish(project_id=project_id)
    return current


def retention_apply(*, now=None) -> dict[str, dict[int, int]]:
    """Delete every project's raw events and exposures older than its retention, with their claims:
    whole months dropped where every project is done with them, the rest in chunks; returns
    {"events": project → rows deleted, "exposures": project → rows deleted}."""
    now = now or timezone.now()
    cutoffs = {
        current.project_id: now - timedelta(days=current.event_retention_days)
        for current in PrivacySettings.objects.filter(event_retention_days__gt=0)
    }
    return {
        "events": subject_data.events_retention_apply(cutoffs=cutoffs).deleted,
        "exposures": subject_data.exposures_retention_apply(cutoffs=cutoffs).deleted,
    }


def exports_expire(*, now=None) -> int:
    """Export files past their keep period are deleted (the link already expired earlier)."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.KAIROS_EXPORT_KEEP_DAYS)
    removed = 0
    for request in DataSubjectRequest.objects.exclude(export_path="").filter(completed_at__lt=cutoff):
        Path(request.export_path).unlink(missing_ok=True)
        request.export_path = ""
        request.save(update_fields=["export_path", "updated_at"])
        removed += 1
    return removed


def suppression_republish() -> int:
    """Copy the suppression list to Redis again, so a Redis that lost its data heals itself."""
    total = 0
    for project_id in Suppression.objects.values_list("project_id", flat=True).distinct().order_by("project_id"):
        digests = suppression_digests(project_id=project_id)
        subject_data.suppression_publish(project_id=project_id, digests=digests)
        total += len(digests)
    return total


def processing_record(*, project_id: int, project_name: str) -> str:
    """The record of processing activities (GDPR Art. 30(1)), in plain text, from the registry."""
    current = privacy_settings_get(project_id=project_id)
    retention = (
        f"{current.event_retention_days} days" if current.event_retention_days else "kept until erased (no limit set)"
    )
    lines = [
        f"Record of processing activities — {project_name}",
        f"Generated {timezone.now():%Y-%m-%d %H:%M} UTC by Kairos from its registry of personal data locations.",
        "",
        "Controller: the organisation running this Kairos installation (fill in name and contact).",
        "Purposes: personalizing the site's content; measuring which content works (experiments, holdouts);",
        "  grouping visitors by behavior (segments); answering data subject requests.",
        "Categories of data subjects: visitors and customers of the site or app, anonymous or logged in.",
        "Recipients: none outside the controller; Kairos is self-hosted.",
        "Transfers to third countries: none by Kairos.",
        f"Raw event and exposure retention: {retention}.",
        f"Consent required for personalization: {'yes' if current.require_consent else 'no'}; "
        f"Global Privacy Control honoured: {'yes' if current.honor_gpc else 'no'}.",
        "Security: API keys stored hashed; erased subjects kept only as keyed HMAC digests; role-based access.",
        "",
        "Categories of personal data, where they are stored, why, and for how long:",
    ]
    for loc in registry.locations():
        lines += [f"- {loc.category}", f"    store: {loc.store} ({loc.name})"]
        lines += [f"    purpose: {loc.purpose}", f"    retention: {loc.retention}"]
    return "\n".join(lines) + "\n"
