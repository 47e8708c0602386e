"""The public events edge: validate a batch and append it to the Redis stream, in the request.

The stream holds one entry per accepted batch; personalization.ingest.drain moves it into
PostgreSQL. Nothing is half written: one Lua script counts the batch against the limits, checks the
project's cap and appends it, all or nothing.
"""

import logging
import time
from datetime import UTC, datetime, timedelta

import orjson
import redis
from django.conf import settings
from django.db import DatabaseError

from personalization import redis_client, rkeys, throttle
from personalization.ingest.schema import MAX_PAST, BatchResult, batch_validate
from personalization.models import Variant

log = logging.getLogger(__name__)

_METRIC_TTL_SECONDS = 2 * 3600


# One script, so a batch is counted against the limits, checked against the project's cap and
# appended with its counters all at once or not at all.
# KEYS: stream, queued hash, metric[, key counter, IP counter]
# ARGV: project, events JSON, received, event count, metric ttl, cap, per-key limit, per-IP limit
# Returns {0, queued} when appended, {1|2, count} over the key|IP limit, {3, queued} at the cap.
_INGEST_LUA = """
local count = tonumber(ARGV[4])
if #KEYS == 5 then
  local limits = {tonumber(ARGV[7]), tonumber(ARGV[8])}
  for i = 1, 2 do
    local n = redis.call('INCR', KEYS[3 + i])
    if n == 1 then redis.call('EXPIRE', KEYS[3 + i], 2) end
    if limits[i] > 0 and n > limits[i] then return {i, n} end
  end
end
local cap = tonumber(ARGV[6])
local queued = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if cap > 0 and queued >= cap then return {3, queued} end
redis.call('XADD', KEYS[1], '*', 'p', ARGV[1], 'd', ARGV[2], 'r', ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[1], count)
redis.call('INCRBY', KEYS[3], count)
redis.call('EXPIRE', KEYS[3], ARGV[5])
return {0, queued}
"""


def events_ingest(
    *,
    project_id: int,
    payload: object,
    key_id: int | None = None,
    ip: str = "",
    pipe_extra=None,
    max_past: timedelta | None = MAX_PAST,
) -> BatchResult:
    """Validate a batch and append the accepted events to the stream, in the request.

    Raises event_schema.BatchError for an unusable envelope, throttle.Throttled over the key's or
    the IP's rate (counted when key_id is given) or at the project's cap of waiting events, and
    redis.RedisError when the stream cannot take the batch (the caller answers 503 so the client
    retries). In every case nothing is half written: the script appends all or nothing.
    `max_past=None` takes events of any age (history import, secret key only).
    """
    result = batch_validate(payload, max_past=max_past, experiences=experience_keys_known(project_id=project_id))
    if not result.accepted:
        return result
    per_key, per_ip = settings.KAIROS_EVENTS_PER_KEY_PER_SECOND, settings.KAIROS_EVENTS_PER_IP_PER_SECOND
    cap = settings.KAIROS_STREAM_CAP_PER_PROJECT
    keys = [rkeys.EVENTS_STREAM, rkeys.EVENTS_QUEUED, rkeys.metric(project_id, "events", int(time.time() // 60))]
    if key_id is not None and (per_key or per_ip):
        keys += throttle.rate_keys("e", key_id, ip)
    pipe = redis_client.fast().pipeline(transaction=False)
    pipe.eval(
        _INGEST_LUA,
        len(keys),
        *keys,
        project_id,
        orjson.dumps(result.accepted),
        datetime.now(UTC).isoformat(),
        len(result.accepted),
        _METRIC_TTL_SECONDS,
        cap,
        per_key,
        per_ip,
    )
    if pipe_extra is not None:
        pipe_extra(pipe)
    verdict, _ = pipe.execute()[0]
    if verdict == 1:
        raise throttle.key_over(per_key)
    if verdict == 2:
        raise throttle.ip_over(per_ip)
    if verdict == 3:
        raise throttle.queue_full(cap)
    return result


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
