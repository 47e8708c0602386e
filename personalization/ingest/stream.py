"""The public events edge: validate a batch and append it to the Redis stream, in the request.

The stream holds one entry per accepted batch; personalization.ingest.drain moves it into
PostgreSQL. Nothing is half written: one Lua script counts the batch against the limits, checks the
project's cap and appends it, all or nothing.

An appended batch also updates its visitors' live session state (people/live_session.py), so the
next decide sees it within milliseconds. The update runs inside the same script, right after the
append and only when the batch was appended, so a batch refused (429) or held at the cap never
counts, the client's retry counts once, and the request costs one EVALSHA in one round trip.
"""

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import orjson
import redis
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import NoScriptError

from personalization import redis_client, rkeys, throttle
from personalization.decide import runtime as decide_runtime
from personalization.decide.hashing import subject_digest
from personalization.ingest.schema import MAX_PAST, BatchResult, batch_validate
from personalization.models import Variant
from personalization.people import live_session

log = logging.getLogger(__name__)

_METRIC_TTL_SECONDS = 2 * 3600


# One script, so a batch is counted against the limits, checked against the project's cap and
# appended with its counters all at once or not at all; then, for an appended batch, the live state
# update (live_session.live_fold) in the same call. Its fault is caught (pcall) and answered beside
# the verdict: the batch is in the stream already, only the live state misses it.
# KEYS: stream, queued hash[, key counter, IP counter] (the script's own keys, all in the `{events}`
#       slot), then, on one Redis, the project's events metric and the live update's keys.
# ARGV: project, events JSON, received, event count, metric ttl, cap, per-key limit, per-IP limit,
#       the number of the ingest's own keys (2|4), then the live update's arguments.
# On Redis Cluster the project's keys live in another slot than the stream, so the script gets only
# its own keys, and the metric and the live update follow in a second round trip (_project_writes).
# Returns {0, queued[, the live update's replies or its error text]} when appended, {1|2, count}
# over the key|IP limit, {3, queued} at the cap.
_INGEST_LUA = (
    live_session.LIVE_FUNCTION_LUA
    + """
local count, own = tonumber(ARGV[4]), tonumber(ARGV[9])
if own == 4 then
  local limits = {tonumber(ARGV[7]), tonumber(ARGV[8])}
  for i = 1, 2 do
    local n = redis.call('INCR', KEYS[2 + i])
    if n == 1 then redis.call('EXPIRE', KEYS[2 + i], 2) end
    if limits[i] > 0 and n > limits[i] then return {i, n} end
  end
end
local cap = tonumber(ARGV[6])
local queued = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if cap > 0 and queued >= cap then return {3, queued} end
redis.call('XADD', KEYS[1], '*', 'p', ARGV[1], 'd', ARGV[2], 'r', ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[1], count)
if #KEYS == own then return {0, queued} end
redis.call('INCRBY', KEYS[own + 1], count)
redis.call('EXPIRE', KEYS[own + 1], ARGV[5])
if #KEYS == own + 1 then return {0, queued} end
local ok, units = pcall(live_fold, own + 1, 9)
if not ok then units = tostring(units) end
return {0, queued, units}
"""
)
_INGEST_SHA = hashlib.sha1(_INGEST_LUA.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)


def events_ingest(
    *,
    project_id: int,
    payload: object,
    key_id: int | None = None,
    ip: str = "",
    pipe_extra=None,
    max_past: timedelta | None = MAX_PAST,
    live: bool = True,
    gpc: bool = False,
) -> BatchResult:
    """Validate a batch and append the accepted events to the stream, in the request.

    Raises event_schema.BatchError for an unusable envelope, throttle.Throttled over the key's or
    the IP's rate (counted when key_id is given) or at the project's cap of waiting events, and
    redis.RedisError when the stream cannot take the batch (the caller answers 503 so the client
    retries). In every case nothing is half written: the script appends all or nothing.
    `max_past=None` takes events of any age (history import, secret key only). `live=False` leaves
    the live state alone (history says nothing of what a visitor does now). `gpc`: the request
    carried Sec-GPC: 1, so where the project honours it only visitors who consented keep live state.
    """
    result = batch_validate(payload, max_past=max_past, experiences=experience_keys_known(project_id=project_id))
    live = live and settings.KAIROS_LIVE_STATE
    if not result.accepted:
        return result
    per_key, per_ip = settings.KAIROS_EVENTS_PER_KEY_PER_SECOND, settings.KAIROS_EVENTS_PER_IP_PER_SECOND
    cap = settings.KAIROS_STREAM_CAP_PER_PROJECT
    # The live update runs in the ingest script with the project's settings as this process last
    # saw them (decide answers with the same snapshot); the script itself skips erased ids and keeps
    # the index of active visitors. Without a snapshot in this process yet, it takes a second round trip.
    snapshot = decide_runtime.snapshots.get(project_id) if live else None
    now = time.time()
    keys = [rkeys.EVENTS_STREAM, rkeys.EVENTS_QUEUED]
    if key_id is not None and (per_key or per_ip):
        keys += throttle.rate_keys("e", key_id, ip)
    own = len(keys)
    metric = rkeys.metric(project_id, "events", int(now // 60))
    client = redis_client.fast()
    cluster = redis_client.is_cluster(client)
    if not cluster:
        keys.append(metric)
    args = [
        project_id,
        orjson.dumps(result.accepted),
        datetime.now(UTC).isoformat(),
        len(result.accepted),
        _METRIC_TTL_SECONDS,
        cap,
        per_key,
        per_ip,
        own,
    ]
    parts = None
    if snapshot is not None:
        parts = live_session.live_parts(
            project_id=project_id,
            events=result.accepted,
            seconds=result.seconds,
            now=now,
            digest=live_digest(project_id),
            settings=_live_settings(snapshot, gpc),
        )
        if parts is not None and not cluster:
            keys += parts[0]
            args += parts[1]
    command = ("EVALSHA", _INGEST_SHA, len(keys), *keys, *args)
    pipe = client.pipeline(transaction=False)
    pipe.execute_command(*command)
    # The live state needs the project's settings from the decide snapshot; its version check rides
    # along here (about once a second per project and process), so it costs no round trip of its own.
    check = live and decide_runtime.snapshots.due(project_id, time.monotonic())
    if check:
        pipe.get(rkeys.snapshot_version(project_id))
    if pipe_extra is not None:
        pipe_extra(pipe)
    replies = pipe.execute(raise_on_error=False)
    if isinstance(replies[0], NoScriptError):
        # Redis did not know the script yet (a restart, a new server): it ran nothing, so send it again.
        client.script_load(_INGEST_LUA)
        replies[0] = client.execute_command(*command)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    verdict = replies[0][0]
    if verdict == 1:
        raise throttle.key_over(per_key)
    if verdict == 2:
        raise throttle.ip_over(per_ip)
    if verdict == 3:
        raise throttle.queue_full(cap)
    if cluster:
        _project_writes(client, metric, len(result.accepted), parts)
    elif parts is not None:
        _live_settle(replies[0][2])
    if check:
        _snapshot_refresh(project_id, replies[1])
    if live and snapshot is None:
        _live_update(project_id, result.accepted, gpc=gpc)
    return result


def live_digest(project_id: int) -> Callable[[str], str]:
    """The digest of an id as the project's suppression set keeps erased ones: the live script
    checks every unit against that set itself, so no sender's stale view of erasures matters."""
    key = settings.KAIROS_PRIVACY_KEY
    return lambda unit: _digest(key, project_id, unit)


# A returning visitor's digest is an HMAC the events request would otherwise compute on every batch.
_digest = lru_cache(maxsize=16_384)(subject_digest)


def _live_settings(snapshot: dict, gpc: bool) -> live_session.LiveSettings:
    privacy = snapshot.get("privacy") or {}
    return live_session.LiveSettings(
        idle_minutes=int((snapshot.get("live") or {}).get("idle_minutes") or live_session.DEFAULT_IDLE_MINUTES),
        require_consent=bool(privacy.get("require_consent") or (gpc and privacy.get("honor_gpc", True))),
    )


def _live_settle(units) -> None:
    """The live update's answer from the ingest script: one reply per unit, or the text of the fault
    it met. A fault here degrades: the events are in the stream already, only the live state misses them."""
    if not isinstance(units, list):
        log.warning("events: live state not updated (%s); the events are stored", _text(units))
    elif -1 in units:
        log.warning("events: live state not updated for %d unit(s) whose key is not a hash", units.count(-1))


def _project_writes(client, metric: str, count: int, parts) -> None:
    """Redis Cluster: the events metric and the live update, in the project's slot, once the ingest
    script appended the batch (so a refused batch still never counts). One more round trip than on
    one Redis; a fault here degrades like the live update's: the events are in the stream already."""
    command = live_session.live_command(parts)
    pipe = client.pipeline(transaction=False)
    pipe.incrby(metric, count)
    pipe.expire(metric, _METRIC_TTL_SECONDS)
    if command is not None:
        pipe.execute_command(*command)
    try:
        replies = pipe.execute(raise_on_error=False)
        if command is not None and isinstance(replies[2], NoScriptError):
            replies[2] = live_session.live_apply(client, command)  # loads the script, sends it again
    except redis.RedisError as exc:
        log.warning("events: counters and live state not updated (%s); the events are stored", exc)
        return
    if command is not None:
        _live_settle(replies[2])


def _text(reply) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _snapshot_refresh(project_id: int, version) -> None:
    try:
        decide_runtime.snapshots.refresh(redis_client.fast(), project_id, version, time.monotonic())
    except redis.RedisError as exc:
        log.warning("events: decide snapshot not refreshed (%s)", exc)


def _live_update(project_id: int, events: list[dict], *, gpc: bool) -> None:
    """Fold the appended events into the live state in a second round trip: this process had no
    snapshot of the project when the request began (its first request). A Redis fault here
    degrades: the events are in the stream already, only the live state misses them, and the answer
    keeps its shape."""
    client = redis_client.fast()
    try:
        snapshot = decide_runtime.snapshots.get(project_id)
        if snapshot is None:
            # No snapshot published yet: the project's consent settings are not known here, and
            # keeping state for a visitor who may not have consented is worse than keeping none.
            return
        units = live_session.live_update(
            client,
            project_id=project_id,
            events=events,
            now=time.time(),
            digest=live_digest(project_id),
            settings=_live_settings(snapshot, gpc),
        )
    except redis.RedisError as exc:
        log.warning("events: live state not updated (%s); the events are stored", exc)
        return
    if -1 in units:
        log.warning("events: live state not updated for %d unit(s) whose key is not a hash", units.count(-1))


_KNOWN_SECONDS = 5.0
_known: dict[int, tuple[float, dict[str, frozenset[str]]]] = {}


def experience_keys_known(*, project_id: int) -> dict[str, frozenset[str]] | None:
    """The project's registered experiences (any status) → their variant keys, cached in process for
    a few seconds: an experience registered just now is known to every server within _KNOWN_SECONDS.
    None when PostgreSQL cannot say: exposures are then taken unchecked rather than lost."""
    now = time.monotonic()
    hit = _known.get(project_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    try:
        rows = Variant.objects.filter(experience__project_id=project_id).values_list("experience__key", "key")
        keys: dict[str, frozenset[str]] = {}
        for experience_key, variant_key in rows:
            keys[experience_key] = keys.get(experience_key, frozenset()) | {variant_key}
    except DatabaseError:
        log.warning("events: experience keys unavailable; exposures accepted unchecked", exc_info=True)
        return None
    if len(_known) > 10_000:
        _known.clear()
    _known[project_id] = (now + _KNOWN_SECONDS, keys)
    return keys


def stream_ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
