"""Projects, memberships and API keys."""

import secrets
from datetime import UTC, datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from personalization import auth, redis_client, rkeys
from personalization.models import ApiKey, KeyKind, Membership, Project, Role
from personalization.services.audit import audit_record

_KEY_PREFIX = {KeyKind.PUBLIC: "kp_", KeyKind.SECRET: "ks_"}


def project_create(*, name: str, owner: AbstractBaseUser | None = None, slug: str | None = None) -> Project:
    """A new project; its creator becomes its admin."""
    with transaction.atomic():
        project = Project.objects.create(name=name, slug=slug or slugify(name)[:60] or secrets.token_hex(4))
        if owner is not None:
            Membership.objects.create(project=project, user=owner, role=Role.ADMIN)
    return project


def membership_set(
    *, project: Project, user: AbstractBaseUser, role: str, by: AbstractBaseUser | None = None
) -> Membership:
    if role not in Role.values:
        raise ValueError(f"role must be one of {', '.join(Role.values)}")
    with transaction.atomic():
        before = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
        membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
        if before != role:
            audit_record(
                project_id=project.pk,
                actor=by,
                action="role_set",
                object_type="member",
                object_key=user.get_username(),
                changes={"role": [before, role]},
            )
    return membership


def api_key_create(*, project: Project, kind: str, name: str, by: AbstractBaseUser | None = None) -> tuple[ApiKey, str]:
    """A new key; returns the row and the raw key, which is shown once and never stored."""
    if kind not in KeyKind.values:
        raise ValueError(f"kind must be one of {', '.join(KeyKind.values)}")
    raw = _KEY_PREFIX[KeyKind(kind)] + secrets.token_urlsafe(24)  # 192 random bits
    with transaction.atomic():
        key = ApiKey.objects.create(
            project=project, kind=kind, name=name or kind, prefix=raw[:10], key_hash=auth.key_hash(raw), created_by=by
        )
        _key_audit(key, by, "create")
    return key, raw


def api_key_revoke(*, key: ApiKey, by: AbstractBaseUser | None = None) -> ApiKey:
    if key.revoked_at is None:
        with transaction.atomic():
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            _key_audit(key, by, "revoke")
    return key


def _key_audit(key: ApiKey, by: AbstractBaseUser | None, action: str) -> None:
    audit_record(
        project_id=key.project_id,
        actor=by,
        action=action,
        object_type="api_key",
        object_key=f"{key.name} ({key.prefix}…)",
        changes={"kind": key.kind},
    )


def api_key_last_used_flush() -> int:
    """Copy last-used times collected in Redis by the request paths into PostgreSQL."""
    client = redis_client.worker()
    pipe = client.pipeline()
    pipe.hgetall(rkeys.KEY_LAST_USED)
    pipe.delete(rkeys.KEY_LAST_USED)
    seen, _ = pipe.execute()
    for key_id, stamp in seen.items():
        used_at = datetime.fromtimestamp(int(stamp), tz=UTC)
        ApiKey.objects.filter(pk=int(key_id)).update(last_used_at=used_at)
    return len(seen)
