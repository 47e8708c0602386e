"""Batch decide: up to MAX_UNITS units in one call, for send-time personalization (an email tool
choosing variants for a list of recipients).

Each unit gets exactly what a single decide would answer (runtime.unit_decide, the same engine call)
and leaves the same sticky writes and exposure events. What differs is the cost: units go in chunks
of CHUNK_UNITS, each chunk reads every unit's hash in one Redis round trip and writes its sticky
fields, one stream entry with all its exposures and the decisions counter in one more, before its
lines are handed out. A chunk's write that fails goes to the write-behind buffer, which retries it
like a single decide's.

The whole body is checked before the first unit is decided, so a bad unit id answers 400 with
nothing written; the first chunk is decided before the answer starts, so a rate limit can still
answer 429. A batch counts as one request against the per-key and per-IP decide limits: its size
is bounded by MAX_UNITS instead.
"""

import time
from collections.abc import Iterator

import redis
from django.conf import settings

from personalization import redis_client, rkeys, throttle
from personalization.decide import runtime
from personalization.decide.runtime import DecideInputError

MAX_UNITS = 10_000
CHUNK_UNITS = 500
# 10,000 ids of 128 characters with their JSON is ~1.5 MB; contexts per unit need room beyond that.
MAX_BODY_BYTES = 8_000_000
_ENTRY_HINT = 'a user id, or an object like {"anonymous_id": "…", "context": {…}}'


def batch_parse(body) -> tuple[list[tuple[str, str, dict]], list[str] | None]:
    """[(kind, unit, context)] and the requested experience keys; DecideInputError naming the field
    (`units[17].user_id`) for the first thing that is wrong."""
    if not isinstance(body, dict):
        raise DecideInputError("body", 'must be a JSON object like {"units": ["u1", {"anonymous_id": "b2"}]}')
    units = body.get("units")
    if not isinstance(units, list) or not units:
        raise DecideInputError("units", f"must be a non-empty list; each entry {_ENTRY_HINT}")
    if len(units) > MAX_UNITS:
        raise DecideInputError("units", f"has {len(units):,} entries; send at most {MAX_UNITS:,} a call")
    if body.get("explain", False) is not False:
        # Taken silently, it would leave the caller waiting for explanations that never come.
        raise DecideInputError(
            "explain",
            'batch decide answers without explanations; leave it out, or ask POST /api/v1/decide with "explain": true',
        )
    # The shared context and the experience list get single decide's checks, once for the batch (the
    # unit id here is a stand-in: request_parse checks a unit too).
    _, _, shared, requested = runtime.request_parse(
        {"user_id": "-", "context": body.get("context"), "experiences": body.get("experiences")}
    )
    parsed: list[tuple[str, str, dict]] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(units):
        if isinstance(entry, str):
            entry = {"user_id": entry}
        elif not isinstance(entry, dict):
            raise DecideInputError(f"units[{index}]", f"must be {_ENTRY_HINT}")
        try:
            kind, unit, context, _ = runtime.request_parse(
                {
                    "user_id": entry.get("user_id"),
                    "anonymous_id": entry.get("anonymous_id"),
                    "context": entry.get("context"),
                }
            )
        except DecideInputError as exc:
            raise DecideInputError(f"units[{index}].{exc.field}", exc.message) from None
        if unit in seen:
            # Within a chunk the second would not see the first's sticky write: two exposures for one unit.
            raise DecideInputError(f"units[{index}]", f"repeats units[{seen[unit]}] ({unit!r}); send each unit once")
        seen[unit] = index
        parsed.append((kind, unit, {**shared, **context} if context else shared))
    return parsed, requested


def decide_batch(
    project_id: int, body, *, key_id: int | None = None, ip: str = "", gpc: bool = False, user_agent: str = ""
) -> Iterator[list[dict]]:
    """Check the body, decide the first chunk, and return the answers chunk by chunk: one dict per
    unit, single decide's answer with the unit under its kind (`{"user_id": …, "decision_id": …,
    "version": …, "assignments": …, "unknown_experiences": …}`), in the order given.

    Raises DecideInputError for a bad body and throttle.Throttled over a limit, before any write."""
    units, requested = batch_parse(body)
    first = _chunk_decide(project_id, units[:CHUNK_UNITS], requested, gpc, user_agent, rate=(key_id, ip))

    def rest() -> Iterator[list[dict]]:
        yield first
        for start in range(CHUNK_UNITS, len(units), CHUNK_UNITS):
            yield _chunk_decide(project_id, units[start : start + CHUNK_UNITS], requested, gpc, user_agent)

    return rest()


def _chunk_decide(project_id, chunk, requested, gpc, user_agent, rate=None) -> list[dict]:
    now = time.monotonic()
    users: list[dict] = [{} for _ in chunk]
    erased = [False] * len(chunk)
    fallback = runtime.redis_down(now)
    if not fallback:
        try:
            users, erased = _chunk_read(project_id, chunk, now, rate)
        except redis.RedisError:
            runtime.redis_down_note(now)
            fallback = True
    snapshot = runtime.snapshots.get(project_id)
    if snapshot is None:
        return [{kind: unit, **runtime.no_snapshot_answer(requested)} for kind, unit, _ in chunk]
    answers, sticky, exposures = [], [], []
    for (kind, unit, context), user, gone in zip(chunk, users, erased, strict=True):
        answer, fields, events = runtime.unit_decide(
            snapshot,
            kind,
            unit,
            user,
            context,
            requested,
            erased=gone,
            fallback=fallback,
            gpc=gpc,
            user_agent=user_agent,
        )
        answers.append({kind: unit, **answer})
        if fields:
            sticky.append((rkeys.unit(project_id, unit), fields))
        exposures.extend(events)
    _chunk_write(project_id, sticky, exposures, len(chunk), skip=fallback)
    return answers


def _chunk_read(project_id, chunk, now, rate) -> tuple[list[dict], list[bool]]:
    """Every unit's hash (and suppression, the snapshot version, the per-IP count) in one round trip;
    the rate verdict for the first chunk."""
    check = runtime.snapshots.due(project_id, now)
    commands: list[tuple] = [("HGETALL", rkeys.unit(project_id, unit)) for _, unit, _ in chunk]
    if check:
        commands.append(("GET", rkeys.snapshot_version(project_id)))
    suppression = [runtime.suppression_check(project_id, unit, check) for _, unit, _ in chunk]
    commands += [command for command in suppression if command is not None]
    key_id, ip = rate or (None, "")
    per_key = settings.KAIROS_DECIDE_PER_KEY_PER_SECOND if key_id is not None else 0
    per_ip = settings.KAIROS_DECIDE_PER_IP_PER_SECOND if key_id is not None else 0
    window = throttle.window_of()
    ip_counter = throttle.ip_counter("d", ip, window, project_id) if per_ip else ""
    if per_ip:
        commands.append(("INCR", ip_counter))
    results = runtime.unit_reads.execute(*commands, slot_key=rkeys.snapshot_version(project_id))
    users = [runtime.hash_as_dict(reply) for reply in results[: len(chunk)]]
    if check:
        runtime.snapshots.refresh(redis_client.fast(), project_id, results[len(chunk)], now)
    replies = iter(results[len(chunk) + check :])
    erased = [command is not None and next(replies) == 1 for command in suppression]
    if per_ip and results[-1] == 1:
        runtime.key_rates.ip_counter_created(ip_counter)
    key_count = runtime.key_rates.count(key_id, window) if per_key else 0
    throttle.rate_verdict([key_count, results[-1] if per_ip else 0], per_key, per_ip)
    return users, erased


def _chunk_write(project_id: int, sticky: list, exposures: list[dict], decided: int, skip: bool) -> None:
    """One round trip for the chunk's sticky fields, exposures and decisions count; on failure (or
    with Redis known to be away) the write-behind buffer takes them and retries."""
    if not skip:
        commands = runtime.writes_pack(
            sticky=sticky, exposures={project_id: exposures}, decisions={project_id: decided}
        )
        try:
            runtime.chunk_writes.execute(*commands)
            return
        except redis.RedisError:
            runtime.redis_down_note(time.monotonic())
    runtime.buffer.add_chunk(project_id, sticky, exposures, decided)
