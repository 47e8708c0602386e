"""The one audit trail of every app: who did what to which object, and when.

Entries about a data subject name the subject by its keyed digest (privacy), never by an
identifier, so the trail itself holds no personal data about the people the site tracks.
"""

from django.contrib.auth.models import AbstractBaseUser

from personalization.models import AuditEntry


def audit_record(
    *,
    project_id: int,
    actor: AbstractBaseUser | None,
    action: str,
    object_type: str,
    object_key: str,
    changes: dict | None = None,
) -> AuditEntry:
    return AuditEntry.objects.create(
        project_id=project_id,
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action[:40],
        object_type=object_type[:40],
        object_key=str(object_key)[:120],
        changes=changes or {},
    )
