"""Change counters of what the drain has stored, so a cached report can tell it is out of date.

After each drain step, every project that got rows has its counter raised by one, and the fields
naming what it got (`all`, `x:<experience>` for exposures, `e:<type>` for other events) set to the
new value. A report records the version it was computed from (`stored_version_read`) and is reused
only while that version is unchanged. The counter lives in Redis next to the stream: one more
command in the drain, none on decide's path. If Redis loses it, the counter starts a new `epoch`
and every version recorded before no longer matches: reports are recomputed, never reused wrongly.
"""

import redis

from personalization import redis_client, rkeys

_BUMP_LUA = """
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if n == 1 then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'epoch', t[1] .. '.' .. t[2])
end
for _, field in ipairs(ARGV) do redis.call('HSET', KEYS[1], field, n) end
return n
"""


def stored_fields(events: list[dict]) -> list[str]:
    """The fields a batch of stored events raises."""
    types = {event.get("type", "") for event in events}
    fields = {"all"} | {f"e:{kind}" for kind in types if kind != "exposure"}
    if "exposure" in types:
        fields |= {
            f"x:{(event.get('properties') or {}).get('experience', '')}"
            for event in events
            if event.get("type") == "exposure"
        }
    return sorted(fields)


def stored_version_bump(*, client: redis.Redis, stored: dict[int, list[dict]]) -> None:
    """Raise the counters of the projects that got rows in this drain step (one round trip)."""
    if not stored:
        return
    pipe = client.pipeline(transaction=False)
    for project_id, events in stored.items():
        if events:
            # EVAL as a raw command: redis-py's Redis Cluster pipeline has no eval().
            pipe.execute_command("EVAL", _BUMP_LUA, 1, rkeys.stored(project_id), *stored_fields(events))
    pipe.execute()


def stored_version_read(*, project_id: int, fields: list[str]) -> str:
    """ "<epoch>:<newest counter among `fields`>", or "" when Redis cannot say (then nothing can be
    trusted as unchanged)."""
    try:
        values = redis_client.worker().hmget(rkeys.stored(project_id), ["epoch", *fields])
    except redis.RedisError:
        return ""
    epoch, *counters = values
    newest = max((int(c) for c in counters if c is not None), default=0)
    return f"{(epoch or b'').decode()}:{newest}"
