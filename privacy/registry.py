"""The registry of personal data locations, as privacy reads it, and privacy's own location.

The mechanism (Subject, Location, register, table, the erasure order) lives in
personalization/people/personal_data.py, the lowest app, so every app registers the locations of its
own tables and Redis keys from its own `AppConfig.ready()`: personalization in
personalization/people/personal_locations.py, segments in segments/personal_data.py, privacy below
(the export files it builds). Export, erasure, objection, profile merge, verification and the Art. 30
record walk `locations()` and nothing else; tests/privacy/test_registry.py fails when a model pointing
at a profile, or a Redis key marked PERSONAL in personalization/rkeys.py, has no location.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

from personalization.people.personal_data import (
    EXPORT_CHUNK,
    ORDER_AFTER_PROFILE,
    Location,
    Subject,
    location,
    locations,
    personal_models,
    personal_redis_keys,
    register,
    subject_merge,
)
from privacy.models import DataSubjectRequest

__all__ = [
    "EXPORT_CHUNK",
    "Location",
    "Subject",
    "location",
    "locations",
    "personal_models",
    "personal_redis_keys",
    "subject_merge",
]


def _export_files(subject: Subject) -> list:
    """Export ZIPs built for this subject's earlier access requests (they hold a copy of the data)."""
    profiles, units = set(subject.profile_ids), set(subject.unit_ids)
    found = []
    for request in DataSubjectRequest.objects.filter(project_id=subject.project_id).exclude(export_path=""):
        ids = request.subject or {}
        if profiles & set(ids.get("profile_ids", ())) or units & set(ids.get("unit_ids", ())):
            found.append(request)
    return found


def _export_files_read(subject: Subject) -> Iterator[dict]:
    for request in _export_files(subject):
        yield {"request": request.reference, "built_at": request.updated_at, "expires_at": request.export_expires_at}


def _export_files_erase(subject: Subject, progress: Callable[[int], None]) -> int:
    removed = 0
    for request in _export_files(subject):
        Path(request.export_path).unlink(missing_ok=True)
        request.export_path = ""
        request.save(update_fields=["export_path", "updated_at"])
        removed += 1
    progress(removed)
    return removed


register(
    Location(
        name="export_files",
        store="files",
        category="copies of the data made for the person's access requests",
        purpose="answering access and portability requests",
        retention="the export retention (KAIROS_EXPORT_KEEP_DAYS), then deleted",
        mechanism="file deleted and its link removed from the request",
        columns=("request", "built_at", "expires_at"),
        export=_export_files_read,
        erase=_export_files_erase,
        verify=lambda subject: len(_export_files(subject)),
        order=ORDER_AFTER_PROFILE + 10,  # the copies go last: the certificate then lists nothing left behind
    )
)
