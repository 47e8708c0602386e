"""Projects, memberships and API keys."""

import logging
import secrets
from datetime import UTC, datetime

import redis
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from personalization import redis_client, rkeys
from personalization.decide.compile import snapshot_publish
from personalization.decide.context import time_zone_valid
from personalization.models import ApiKey, Event, Exposure, KeyKind, Membership, Project, Role
from personalization.people.journey import DEFAULT_DEFINITION, JourneyDefinitionError, journey_definition
from personalization.workspace import auth
from personalization.workspace.audit import audit_record

log = logging.getLogger(__name__)

_KEY_PREFIX = {KeyKind.PUBLIC: "kp_", KeyKind.SECRET: "ks_"}


class ProjectError(ValueError):
    """A user-fixable problem with a project; names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise ProjectError("name", "is required, e.g. “Acme shop”")
    if len(name) > 120:
        raise ProjectError("name", "is too long; use at most 120 characters")
    return name


def _free_slug(name: str) -> str:
    base = slugify(name)[:50] or "project"
    slug, n = base, 2
    while Project.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def _audit(project: Project, by, action: str, changes: dict) -> None:
    audit_record(
        project_id=project.pk, actor=by, action=action, object_type="project", object_key=project.slug, changes=changes
    )


def project_create(*, name: str, owner: AbstractBaseUser | None = None, slug: str | None = None) -> Project:
    """A new project; its creator becomes its admin. The slug is made from the name when not given."""
    name = _clean_name(name)
    if slug is not None and Project.objects.filter(slug=slug).exists():
        raise ProjectError("slug", f"“{slug}” is taken; choose another")
    with transaction.atomic():
        project = Project.objects.create(name=name, slug=slug or _free_slug(name))
        if owner is not None:
            Membership.objects.create(project=project, user=owner, role=Role.ADMIN)
        _audit(project, owner, "create", {"name": name})
    return project


def project_rename(*, project: Project, name: str, by: AbstractBaseUser | None = None) -> Project:
    name = _clean_name(name)
    before = project.name
    with transaction.atomic():
        project.name = name
        project.save(update_fields=["name"])
        _audit(project, by, "rename", {"name": [before, name]})
    return project


IDLE_MINUTES_RANGE = (5, 240)


def _journey_overrides(journey: dict) -> dict:
    """Only the thresholds that differ from the product's (a later default change then reaches
    every project that did not choose its own). Raises ProjectError naming journey.<stage>.<measure>."""
    try:
        definition = journey_definition(journey)
    except JourneyDefinitionError as exc:
        raise ProjectError(exc.field, exc.message) from None
    overrides: dict = {}
    for rule, default in zip(definition, DEFAULT_DEFINITION, strict=True):
        for part in ("all", "any"):
            for measure, value in rule[part].items():
                if value != default[part][measure]:
                    overrides.setdefault(rule["stage"], {})[measure] = value
    return overrides


def project_live_update(
    *,
    project: Project,
    live_idle_minutes: object,
    time_zone: object,
    journey: object,
    by: AbstractBaseUser | None = None,
) -> Project:
    """The live-intent settings: minutes without events that end a session, the time zone of local
    hour and weekday, and the journey stage's thresholds ({stage: {measure: whole number}}).
    Raises ProjectError naming the field and the fix; nothing is saved then."""
    low, high = IDLE_MINUTES_RANGE
    if (
        isinstance(live_idle_minutes, bool)
        or not isinstance(live_idle_minutes, int)
        or not low <= live_idle_minutes <= high
    ):
        raise ProjectError("live_idle_minutes", f"must be a whole number of minutes from {low} to {high}, e.g. 30")
    if not isinstance(time_zone, str) or not time_zone.strip() or not time_zone_valid(time_zone.strip()):
        raise ProjectError("time_zone", "must be a time zone name such as Europe/Paris, America/New_York or UTC")
    if not isinstance(journey, dict):
        raise ProjectError("journey", "must be an object of stage → {measure: threshold}")
    overrides = _journey_overrides(journey)
    fields = {"live_idle_minutes": live_idle_minutes, "time_zone": time_zone.strip(), "journey": overrides}
    changes = {
        name: [getattr(project, name), value] for name, value in fields.items() if getattr(project, name) != value
    }
    with transaction.atomic():
        for name, value in fields.items():
            setattr(project, name, value)
        project.save(update_fields=list(fields))
        if changes:
            _audit(project, by, "update", changes)
        transaction.on_commit(lambda: snapshot_publish(project_id=project.pk))
    return project


def project_delete(*, project: Project, confirm: str, by: AbstractBaseUser | None = None) -> None:
    """Delete a project with everything in it (profiles, events, experiences, keys, reports) and its
    Redis data. `confirm` must be the project's name or slug: this cannot be undone."""
    if confirm.strip() not in (project.name, project.slug):
        raise ProjectError("confirm", f"type the project's name (“{project.name}”) to delete it")
    log.warning("project %s (%s) deleted by %s", project.slug, project.pk, by)
    client = redis_client.worker()
    batch = []
    for key in client.scan_iter(match=rkeys.project_keys(project.pk), count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)
    _stream_forget(client, project.pk)
    digests = list(project.api_keys.filter(kind=KeyKind.PUBLIC).values_list("key_hash", flat=True))
    if digests:
        client.hdel(rkeys.PUBLIC_KEYS, *digests)
    with transaction.atomic():
        # The bulk tables first, each in one statement; the cascade then has little left to collect.
        Event.objects.filter(project=project).delete()
        Exposure.objects.filter(project=project).delete()
        project.delete()


def _stream_forget(client, project_id: int) -> None:
    """Remove the project's not yet drained batches from the event stream: their project is going."""
    start, mine = "-", []
    while True:
        entries = client.xrange(rkeys.EVENTS_STREAM, min=start, max="+", count=1000)
        mine.extend(entry_id for entry_id, fields in entries if fields.get(b"p") == str(project_id).encode())
        if len(entries) < 1000:
            break
        start = "(" + entries[-1][0].decode()
    if mine:
        client.xdel(rkeys.EVENTS_STREAM, *mine)


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
        transaction.on_commit(lambda: _public_key_publish(key))
    return key, raw


def api_key_revoke(*, key: ApiKey, by: AbstractBaseUser | None = None) -> ApiKey:
    if key.revoked_at is None:
        with transaction.atomic():
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            _key_audit(key, by, "revoke")
            transaction.on_commit(lambda: _public_key_publish(key))
    return key


def _public_key_publish(key: ApiKey) -> None:
    """Tell decide and events about a public key now. If Redis cannot be told, a key Redis does not
    have is looked up in PostgreSQL, and api_keys_publish (beat, every few seconds) catches up."""
    if key.kind != KeyKind.PUBLIC:
        return
    value = auth.published_key_value(key_id=key.pk, project_id=key.project_id, revoked=key.revoked_at is not None)
    try:
        redis_client.worker().hset(rkeys.PUBLIC_KEYS, key.key_hash, value)
    except redis.RedisError:
        log.warning("public key %s… could not be published to Redis; beat publishes it shortly", key.prefix)


def api_keys_publish() -> int:
    """Publish every public key to Redis (what decide and events check), and forget deleted ones.

    Run by beat, so a Redis that restarted without the last writes, or lost its data, is right again
    within one period. A revoked key is written as revoked whatever Redis said; an active one only
    where Redis has nothing (HSETNX), so this never undoes a revocation that committed after the rows
    were read. A key created after the read and removed here as unknown is still found in PostgreSQL
    until the next run publishes it."""
    rows = ApiKey.objects.filter(kind=KeyKind.PUBLIC).values_list("key_hash", "pk", "project_id", "revoked_at")
    client = redis_client.worker()
    known = set()
    pipe = client.pipeline(transaction=False)
    for digest, key_id, project_id, revoked_at in rows.iterator(chunk_size=2000):
        known.add(digest.encode())
        value = auth.published_key_value(key_id=key_id, project_id=project_id, revoked=revoked_at is not None)
        (pipe.hset if revoked_at is not None else pipe.hsetnx)(rkeys.PUBLIC_KEYS, digest, value)
    gone = [digest for digest in client.hkeys(rkeys.PUBLIC_KEYS) if digest not in known]
    if gone:
        pipe.hdel(rkeys.PUBLIC_KEYS, *gone)
    pipe.execute()
    return len(known)


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
