"""API key authentication for the public endpoints (decide, events) and the REST API.

Keys are looked up by their SHA-256 hash, cached in process for KEY_CACHE_SECONDS, so a revoked key
stops working on every server within that time. Public keys (decide, events) are looked up in Redis,
where services publish their hashes on create and revoke (and a beat task re-publishes them all, to
heal a Redis that lost data): so the public endpoints need Redis alone and keep serving every key,
seen before or not, while PostgreSQL is away. A hash Redis does not have is asked of PostgreSQL.
Secret keys (the REST API) are only ever looked up in PostgreSQL; their hashes never go to Redis.
Last use is recorded in Redis and written to PostgreSQL by a periodic task.
"""

import contextlib
import hashlib
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError
from rest_framework import authentication, exceptions, permissions

from personalization import redis_client, rkeys

KEY_CACHE_SECONDS = settings.KAIROS_KEY_CACHE_MS / 1000
_LAST_USED_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class KeyInfo:
    key_id: int
    project_id: int
    kind: str


_cache: dict[str, tuple[float, KeyInfo | None]] = {}
_last_used_sent: dict[int, float] = {}


def key_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class KeysUnavailable(Exception):
    """PostgreSQL cannot be asked about a key this process has never seen."""


def api_key_lookup(raw: str) -> KeyInfo | None:
    """The active key (public or secret) for a raw key string, or None. Cached in process.

    With PostgreSQL away, a key seen before keeps its last answer; a key never seen raises
    KeysUnavailable."""
    digest = key_hash(raw)
    hit = _cache.get(digest)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    return _database_lookup(digest, hit)


def public_key_lookup(raw: str) -> KeyInfo | None:
    """The active public key for a raw key string, or None: for decide and events. Cached in process;
    then one Redis HGET; PostgreSQL only for a hash Redis does not have (never published, or lost)."""
    digest = key_hash(raw)
    hit = _cache.get(digest)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    try:
        published = redis_client.fast().hget(rkeys.PUBLIC_KEYS, digest)
    except redis.RedisError:
        published = None  # decide degrades without Redis; the key can still be checked in PostgreSQL
    if published is None:
        return _database_lookup(digest, hit)
    info = published_key_parse(published)
    _remember(digest, info)
    return info


def published_key_value(*, key_id: int, project_id: int, revoked: bool) -> str:
    """What PUBLIC_KEYS holds for a public key: "project:key", or "-" once it is revoked."""
    return "-" if revoked else f"{project_id}:{key_id}"


def published_key_parse(value: bytes) -> KeyInfo | None:
    if value == b"-":
        return None
    project_id, key_id = value.split(b":")
    return KeyInfo(int(key_id), int(project_id), "public")


def _database_lookup(digest: str, hit: tuple[float, KeyInfo | None] | None) -> KeyInfo | None:
    # Models and permissions (which imports them) load lazily: DRF imports this module from
    # settings (DEFAULT_AUTHENTICATION_CLASSES), before Django's app registry is ready.
    from personalization.models import ApiKey

    try:
        row = (
            ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True)
            .values_list("id", "project_id", "kind")
            .first()
        )
    except DatabaseError as exc:
        if hit is None:
            raise KeysUnavailable(str(exc)) from exc
        _remember(digest, hit[1])  # ask again in a while, not on every request
        return hit[1]
    info = KeyInfo(*row) if row else None
    _remember(digest, info)
    return info


def _remember(digest: str, info: KeyInfo | None) -> None:
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[digest] = (time.monotonic() + KEY_CACHE_SECONDS, info)


def cache_clear() -> None:
    _cache.clear()
    _last_used_sent.clear()


def last_used_note(pipe, info: KeyInfo) -> None:
    """Queue a last-used update on a Redis pipeline the request sends anyway (at most once a minute)."""
    now = time.monotonic()
    if _last_used_sent.get(info.key_id, 0.0) > now:
        return
    _last_used_sent[info.key_id] = now + _LAST_USED_EVERY_SECONDS
    pipe.hset(rkeys.KEY_LAST_USED, str(info.key_id), int(time.time()))


class SecretKeyAuthentication(authentication.BaseAuthentication):
    """REST API: `Authorization: Bearer ks_…`; the request is scoped to the key's project."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.startswith("Bearer "):
            return None
        raw = header[7:].strip()
        info = api_key_lookup(raw)
        if info is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key; create one under Settings → API keys.")
        if info.kind != "secret":
            raise exceptions.AuthenticationFailed(
                "This is a public key (kp_…); the REST API needs a secret key (ks_…)."
            )
        # last-used time is best effort, never a reason to fail a request
        with contextlib.suppress(redis.RedisError):
            pipe = redis_client.fast().pipeline(transaction=False)
            last_used_note(pipe, info)
            pipe.execute()
        request.kairos_project_id = info.project_id
        return (None, info)

    def authenticate_header(self, request):
        return 'Bearer realm="kairos"'


class HasProject(permissions.BasePermission):
    """The caller's project and principal, checked against `permissions.ACTIONS` for the view's action.

    A secret key is scoped to its project and acts as the `secret_key` principal; a dashboard session
    to its current project (the one chosen in the dashboard, else its first) with the member's role.
    A DRF view names its action in `required_action` (a string, or a dict by viewset action).
    """

    message = "Authenticate with a secret key (Authorization: Bearer ks_…) or log in to the dashboard."

    def has_permission(self, request, view):
        from personalization.workspace import permissions as role_map  # lazily: see _database_lookup

        principal = self._principal(request)
        if principal is None:
            return False
        action = view_action(view)
        if not role_map.principal_allows(principal=principal, action=action):
            self.message = f"Your role ({principal}) may not use {action}; ask an admin of this project."
            return False
        return True

    @staticmethod
    def _principal(request) -> str | None:
        from personalization.workspace import permissions as role_map  # lazily: see _database_lookup

        if isinstance(request.auth, KeyInfo):
            return role_map.SECRET_KEY
        user = request.user
        if user is None or not user.is_authenticated:
            return None
        memberships = dict(user.memberships.values_list("project_id", "role"))
        project_id = request.session.get("project_id")
        if project_id not in memberships:
            project_id = min(memberships, default=None)
        if project_id is None:
            return None
        request.kairos_project_id = project_id
        return memberships[project_id]


def view_action(view) -> str:
    """The permission action a DRF view declares (`required_action`); undeclared views are refused."""
    from personalization.workspace import permissions as role_map  # lazily: see _database_lookup

    declared = getattr(view, "required_action", None)
    if isinstance(declared, dict):
        declared = declared.get(getattr(view, "action", None))
    if not declared:
        raise exceptions.PermissionDenied(f"{type(view).__name__} declares no required_action")
    return role_map.action_check(declared)
