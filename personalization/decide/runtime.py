"""The decide runtime around the pure engine: the in-process snapshot, the one Redis round trip per
request, and the write-behind buffer for sticky assignments, exposures and counters.

No ORM query happens here. What a crashed decide process can lose: the buffer is flushed every
FLUSH_INTERVAL seconds (and at exit), so a process killed with SIGKILL loses at most that much of
its sticky writes and exposure records; the users keep getting the same variant from the hash, and
the exposure is recorded again on their next decide (the first exposure is what the analysis uses).
"""

import atexit
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from itertools import chain

import orjson
import redis
from django.conf import settings

from personalization import redis_client, rkeys, throttle
from personalization.decide import engine, redis_wire
from personalization.decide.explain import assignment_explanation
from personalization.decide.hashing import subject_digest
from personalization.decide.live import request_facts
from personalization.decide.units import UNIT_TTL_SECONDS
from personalization.ingest.schema import (
    MAX_DEPTH,
    MAX_PROPERTIES_CHARS,
    FieldError,
    json_check,
    json_limits_check,
    text_check,
)

log = logging.getLogger(__name__)

# How stale a decide process's snapshot may be: its version is read in the request's one round trip
# (no second trip, no listener thread) once this long after the last read. A quarter second so that an
# edit is answered by every replica well within the second users are promised (issue 21; the check
# was once a second, which with the buffer flushes made 1.5 s); four GETs a second per project and
# process cost Redis nothing against the requests they ride on.
SNAPSHOT_CHECK_SECONDS = 0.25
FLUSH_INTERVAL = 0.05
REDIS_RETRY_SECONDS = 1.0


def decide_snapshot_settle_seconds() -> float:
    """How long until every decide process has seen a newly published snapshot and flushed what it
    buffered under the old one (a snapshot check, plus ten buffer flushes of margin)."""
    return SNAPSHOT_CHECK_SECONDS + 10 * FLUSH_INTERVAL


MAX_BUFFERED = 200_000


class _Snapshots:
    """Per project: the snapshot in use and when its version was last checked."""

    def __init__(self):
        self.by_project: dict[int, tuple[dict, float]] = {}

    def due(self, project_id: int, now: float) -> bool:
        hit = self.by_project.get(project_id)
        return hit is None or now - hit[1] >= SNAPSHOT_CHECK_SECONDS

    def get(self, project_id: int) -> dict | None:
        hit = self.by_project.get(project_id)
        return hit[0] if hit else None

    def refresh(self, client, project_id: int, published_version, now: float) -> None:
        current = self.get(project_id)
        if published_version is None:
            if current is not None:
                self.by_project[project_id] = (current, now)
            return
        if current is None or str(current.get("version")) != published_version.decode():
            raw = client.get(rkeys.snapshot(project_id))
            if raw:
                current = orjson.loads(raw)
                engine.conditions_prepare(current)
        if current is not None:
            self.by_project[project_id] = (current, now)


def _held_connection(held: tuple | None, client) -> tuple:
    """(client, pid, redis_wire.Connection like client): made again for a new client (tests) or after a fork."""
    if held is None or held[0] is not client or held[1] != os.getpid():
        held = (client, os.getpid(), redis_wire.Connection.like(client))
    return held


def writes_pack(*, sticky: list[tuple[str, dict]], exposures: dict[int, list[dict]], decisions: dict[int, int]) -> list:
    """The commands that record decisions: sticky fields (renewing the unit's TTL), one stream entry
    per project with all its exposure events, and the per-minute decisions counter. The write-behind
    flush and batch decide's per-chunk write both send these, so both record alike."""
    commands: list[tuple] = []
    for unit_key, fields in sticky:
        commands.append(("HSET", unit_key, *chain.from_iterable(fields.items())))
        commands.append(("EXPIRE", unit_key, UNIT_TTL_SECONDS))
    received = datetime.now(UTC).isoformat()
    for project_id, events in exposures.items():
        if events:
            commands.append(
                ("XADD", rkeys.EVENTS_STREAM, "*", "p", project_id, "d", orjson.dumps(events), "r", received)
            )
            commands.append(("HINCRBY", rkeys.EVENTS_QUEUED, project_id, len(events)))
    minute = int(time.time() // 60)
    for project_id, count in decisions.items():
        metric = rkeys.metric(project_id, "decisions", minute)
        commands.append(("INCRBY", metric, count))
        commands.append(("EXPIRE", metric, 7200))
    return commands


class _Buffer:
    """Writes that may wait ~50 ms: sticky fields, exposure events, the decisions counter."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sticky: list[tuple[str, dict]] = []
        self.exposures: dict[int, list[dict]] = defaultdict(list)
        self.decisions: dict[int, int] = defaultdict(int)
        self.keys_used: set[int] = set()
        self.size = 0
        self.thread: threading.Thread | None = None
        self.flushing = threading.Lock()
        self.held: tuple | None = None  # (client, pid, redis_wire.Connection)

    def note_key(self, key_id: int) -> None:
        """The API key's last-used time, written with the next flush."""
        self.keys_used.add(key_id)

    def add(self, project_id: int, unit_key: str, sticky: dict, exposures: list[dict]) -> None:
        with self.lock:
            self.decisions[project_id] += 1
            if self.size >= MAX_BUFFERED:
                return  # Redis has been away a long time; keep serving, drop the oldest news (counted in logs)
            if sticky:
                self.sticky.append((unit_key, sticky))
            if exposures:
                self.exposures[project_id].extend(exposures)
            self.size += len(exposures) + bool(sticky)
        if self.thread is None:
            self._start()

    def add_chunk(self, project_id: int, sticky: list[tuple[str, dict]], exposures: list[dict], decisions: int) -> None:
        """A batch chunk whose own write failed: the flusher retries it with the rest (same limit)."""
        with self.lock:
            self.decisions[project_id] += decisions
            if self.size >= MAX_BUFFERED:
                return
            self.sticky.extend(sticky)
            self.exposures[project_id].extend(exposures)
            self.size += len(exposures) + len(sticky)
        if self.thread is None:
            self._start()

    def _start(self) -> None:
        with self.lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(target=self._run, name="decide-flush", daemon=True)
            self.thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            try:
                self.flush()
            except redis.RedisError:
                time.sleep(REDIS_RETRY_SECONDS)
            except Exception:
                # The flusher must outlive any surprise, or decide would silently stop recording.
                log.exception("decide: flushing the write-behind buffer failed; retrying")
                time.sleep(REDIS_RETRY_SECONDS)

    def flush(self) -> None:
        with self.flushing:  # the flusher thread, atexit and tests may flush at once; one socket
            self._flush()

    def _flush(self) -> None:
        rate_commands, rate_learn = key_rates.take()
        with self.lock:
            sticky, exposures, decisions = self.sticky, self.exposures, self.decisions
            keys_used, self.keys_used = self.keys_used, set()
            if not (sticky or exposures or decisions or keys_used or rate_commands):
                return
            self.sticky, self.exposures, self.decisions, self.size = [], defaultdict(list), defaultdict(int), 0
        commands = writes_pack(sticky=sticky, exposures=exposures, decisions=decisions)
        if keys_used:
            now = int(time.time())
            commands.append(("HSET", rkeys.KEY_LAST_USED, *chain.from_iterable((k, now) for k in keys_used)))
        commands += rate_commands
        try:
            replies = self._execute(commands)
            rate_learn(replies[len(commands) - len(rate_commands) :])
        except redis.RedisError:
            with self.lock:  # put it back in front, to be retried when Redis returns
                self.sticky = sticky + self.sticky
                for project_id, events in exposures.items():
                    self.exposures[project_id] = events + self.exposures[project_id]
                for project_id, count in decisions.items():
                    self.decisions[project_id] += count
                self.keys_used |= keys_used
                self.size += sum(len(e) for e in exposures.values()) + len(sticky)
            raise

    def _execute(self, commands: list[tuple]) -> list:
        """With the patient worker client's settings (a flush may wait for Redis; requests never do)."""
        client = redis_client.worker()
        if redis_client.is_cluster(client):
            return redis_client.commands_run(client, commands)  # sticky fields, stream, counters: many slots
        self.held = _held_connection(self.held, client)
        return self.held[2].execute(*commands)


class _KeyRates:
    """Decide's per-key limit, counted without a command in the request. Each process counts its
    requests per key and window; the write-behind flush adds them to Redis (INCRBY) and learns every
    process's total from the reply, so the limit holds across processes to within one flush (~50 ms).
    Per-IP counts need no such care: they are one INCR inside the request's round trip."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending: dict[tuple[int, int], int] = defaultdict(int)  # (key id, window) -> not yet sent
        self.known: dict[tuple[int, int], int] = {}  # (key id, window) -> every process's total when last sent
        self.created: set[str] = set()  # per-IP counters this process created: they get their expiry

    def count(self, key_id: int, window: int) -> int:
        """Count one request; returns the key's requests in the window, as far as this process knows."""
        slot = (key_id, window)
        with self.lock:
            self.pending[slot] += 1
            return self.known.get(slot, 0) + self.pending[slot]

    def ip_counter_created(self, name: str) -> None:
        with self.lock:
            self.created.add(name)

    def take(self) -> tuple[list[tuple], object]:
        """The commands for the next flush, and the function that learns the totals from their replies."""
        with self.lock:
            pending, self.pending = self.pending, defaultdict(int)
            created, self.created = self.created, set()
            oldest = throttle.window_of() - 1
            self.known = {slot: n for slot, n in self.known.items() if slot[1] >= oldest}
            # Keys seen this window are asked again (INCRBY 0) even when idle here: other processes count on.
            slots = list(pending) + [slot for slot in self.known if slot not in pending and slot[1] > oldest]
        commands: list[tuple] = []
        for slot in slots:
            name = throttle.key_counter("d", *slot)
            commands += [("INCRBY", name, pending.get(slot, 0)), ("EXPIRE", name, 2 * throttle.WINDOW_SECONDS)]
        commands += [("EXPIRE", name, 2 * throttle.WINDOW_SECONDS) for name in created]

        def learn(replies: list) -> None:
            with self.lock:
                for index, slot in enumerate(slots):
                    self.known[slot] = int(replies[2 * index])

        return commands, learn


class _UnitReads:
    """The request's one round trip, on a bare connection (redis_wire) each request thread keeps to
    itself: redis-py's pooled path costs several times the round trip's own CPU, and decide's
    throughput is CPU-bound. `client` gives the settings (timeouts) of the connection.

    On Redis Cluster a round trip names `slot_key`, a key of the slot all its commands share (one
    project's: rkeys), and goes on a bare connection to the node serving that slot; commands of many
    slots (the write-behind flush, batch writes) go through redis-py's cluster pipeline instead,
    which sends each node its share."""

    def __init__(self, client=redis_client.fast):
        self.local = threading.local()
        self.client = client

    def _connection(self, client, node=None) -> redis_wire.Connection:
        if node is None:
            self.local.held = _held_connection(getattr(self.local, "held", None), client)
            return self.local.held[2]
        nodes = self.local.__dict__.setdefault("nodes", {})
        nodes[node.name] = _held_connection(nodes.get(node.name), node.redis_connection)
        return nodes[node.name][2]

    def execute(self, *commands: tuple, slot_key: str | None = None) -> list:
        client = self.client()
        if not redis_client.is_cluster(client):
            conn = self._connection(client)
        elif slot_key is None:
            return redis_client.commands_run(client, commands)
        else:
            conn = self._connection(client, client.get_node_from_key(slot_key))
        try:
            return conn.execute(*commands)
        except redis.ConnectionError:
            pass  # a stale socket (Redis restarted): once more on a fresh one
        except redis.ResponseError as exc:
            if slot_key is None or not str(exc).startswith(("MOVED", "ASK")):
                raise
            client.nodes_manager.initialize()  # the cluster moved the slot: learn where it went
        if slot_key is not None and redis_client.is_cluster(client):
            conn = self._connection(client, client.get_node_from_key(slot_key))
        return conn.execute(*commands)


def hash_as_dict(reply) -> dict:
    """HGETALL's reply: a map under RESP3, a flat list of field, value under RESP2."""
    if isinstance(reply, dict):
        return {k.decode(): v.decode() for k, v in reply.items()}
    return {reply[i].decode(): reply[i + 1].decode() for i in range(0, len(reply), 2)}


snapshots = _Snapshots()
key_rates = _KeyRates()
buffer = _Buffer()
unit_reads = _UnitReads()
# Batch decide's per-chunk writes: the patient settings of the flusher (a chunk may wait for Redis).
chunk_writes = _UnitReads(redis_client.worker)
_redis_down_until = 0.0


def redis_down(now: float) -> bool:
    """Redis failed less than REDIS_RETRY_SECONDS ago: answer from the snapshot without asking it."""
    return now < _redis_down_until


def redis_down_note(now: float) -> None:
    global _redis_down_until
    log.warning("decide: Redis unavailable; answering from the in-process snapshot")
    _redis_down_until = now + REDIS_RETRY_SECONDS


class DecideInputError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _unit_of(body: dict) -> tuple[str, str]:
    for name in ("user_id", "anonymous_id"):
        value = body.get(name)
        if value is not None and value != "":
            if not isinstance(value, str) or len(value) > 128:
                raise DecideInputError(name, "must be a string of at most 128 characters")
            return name, value
    raise DecideInputError("user_id", "is missing: give user_id or anonymous_id")


def request_parse(body) -> tuple[str, str, dict, list[str] | None]:
    if not isinstance(body, dict):
        raise DecideInputError("body", 'must be a JSON object like {"anonymous_id": "…", "context": {…}}')
    kind, unit = _unit_of(body)
    context = body.get("context") or {}
    if not isinstance(context, dict):
        raise DecideInputError("context", 'must be an object like {"url": "/", "device": "mobile"}')
    for name in ("attributes", "consent"):
        if context.get(name) is not None and not isinstance(context[name], dict):
            raise DecideInputError(f"context.{name}", "must be an object of name → value")
    requested = body.get("experiences")
    if requested is not None and (
        not isinstance(requested, list)
        or not all(isinstance(k, str) and len(k) <= 64 for k in requested)
        or len(requested) > 200
    ):
        raise DecideInputError("experiences", "must be a list of experience keys (at most 200), or left out for all")
    try:
        # The unit id goes into exposure events and Redis keys: it must be storable text. The context
        # is only read (targeting), never stored, but it gets the limits of event properties: it is
        # walked on every decision, and what a site sends as properties it may send as context.
        text_check(unit, kind)
        if context:
            json_limits_check(context, "context", max_depth=MAX_DEPTH, max_chars=MAX_PROPERTIES_CHARS)
        if requested:
            json_check(requested, "experiences")
    except FieldError as exc:
        raise DecideInputError(exc.field, exc.message) from None
    return kind, unit, context, requested


def _explain_of(body: dict) -> bool:
    """The request's `explain` (default false): a reason text with each assignment."""
    value = body.get("explain", False)
    if not isinstance(value, bool):
        raise DecideInputError("explain", "must be true or false (true adds an explanation to each assignment)")
    return value


def suppression_check(project_id: int, unit: str, check: bool) -> tuple | None:
    """SISMEMBER of the unit's keyed digest in the erased subjects' set, once the project has one
    (or when the snapshot is about to be refreshed, since the new one may say it has)."""
    snapshot = snapshots.get(project_id)
    if not check and (snapshot is None or not (snapshot.get("privacy") or {}).get("suppressed")):
        return None
    return ("SISMEMBER", rkeys.suppressed(project_id), subject_digest(settings.KAIROS_PRIVACY_KEY, project_id, unit))


def decide(
    project_id: int, body, *, key_id: int | None = None, ip: str = "", gpc: bool = False, user_agent: str = ""
) -> dict:
    """Answer one decide request. Raises DecideInputError for bad input and throttle.Throttled over a
    limit (counted for `key_id` and `ip` when given); never for infrastructure.

    `gpc`: the request carried the Global Privacy Control signal (Sec-GPC: 1). A unit on the
    suppression list (an erased subject) gets defaults and leaves no trace: no sticky write, no exposure.
    `user_agent` gives the device class when the context names none (targeting conditions).
    """
    global _redis_down_until
    kind, unit, context, requested = request_parse(body)
    explain = _explain_of(body)
    now = time.monotonic()
    unit_key = rkeys.unit(project_id, unit)
    user: dict = {}
    erased = False
    fallback = now < _redis_down_until
    if not fallback:
        per_key = settings.KAIROS_DECIDE_PER_KEY_PER_SECOND if key_id is not None else 0
        per_ip = settings.KAIROS_DECIDE_PER_IP_PER_SECOND if key_id is not None else 0
        window = throttle.window_of()
        # The per-IP limit costs one INCR in the same round trip, the per-key limit none (_KeyRates);
        # with Redis away nothing is limited.
        ip_counter = throttle.ip_counter("d", ip, window, project_id) if per_ip else ""
        try:
            check = snapshots.due(project_id, now)
            suppression = suppression_check(project_id, unit, check)
            commands = [("HGETALL", unit_key)]
            if check:
                commands.append(("GET", rkeys.snapshot_version(project_id)))
            if suppression is not None:
                commands.append(suppression)
                suppressed_at = len(commands) - 1
            if per_ip:
                commands.append(("INCR", ip_counter))
            results = unit_reads.execute(*commands, slot_key=unit_key)
            user = hash_as_dict(results[0])
            erased = suppression is not None and results[suppressed_at] == 1
            if check:
                snapshots.refresh(redis_client.fast(), project_id, results[1], now)
        except redis.RedisError as exc:
            log.warning("decide: Redis unavailable (%s); answering from the in-process snapshot", exc)
            _redis_down_until = now + REDIS_RETRY_SECONDS
            fallback = True
        else:
            ip_count = results[-1] if per_ip else 0
            if ip_count == 1:
                key_rates.ip_counter_created(ip_counter)
            key_count = key_rates.count(key_id, window) if per_key else 0
            throttle.rate_verdict([key_count, ip_count], per_key, per_ip)
    snapshot = snapshots.get(project_id)
    if snapshot is None:
        return no_snapshot_answer(requested, explain=explain)
    answer, sticky, exposures = unit_decide(
        snapshot,
        kind,
        unit,
        user,
        context,
        requested,
        erased=erased,
        fallback=fallback,
        gpc=gpc,
        user_agent=user_agent,
        explain=explain,
    )
    buffer.add(project_id, unit_key, sticky, exposures)
    return answer


def no_snapshot_answer(requested: list[str] | None, *, explain: bool = False) -> dict:
    """Without a snapshot (never published, or not yet loaded with Redis away): defaults."""
    return {
        "decision_id": uuid.uuid4().hex,
        "version": None,
        "assignments": {
            k: {"variant": None, "payload": None, "reason": "fallback", "version": None}
            | ({"explanation": None} if explain else {})
            for k in requested or []
        },
        "unknown_experiences": [],
    }


def unit_decide(
    snapshot: dict,
    kind: str,
    unit: str,
    user: dict,
    context: dict,
    requested: list[str] | None,
    *,
    erased: bool,
    fallback: bool,
    gpc: bool,
    user_agent: str,
    explain: bool = False,
) -> tuple[dict, dict, list[dict]]:
    """One unit's answer, its sticky writes and its exposure events, from what the round trip read:
    the one engine call behind decide, batch decide and OFREP."""
    decision_id = uuid.uuid4().hex
    if erased:
        decision = engine.decide_unit(snapshot, unit, {"dnp": "1"}, context, requested)
        sticky, exposures = {}, []
    else:
        live = request_facts(user, context, settings=snapshot.get("live") or {}, user_agent=user_agent)
        decision = engine.decide_unit(snapshot, unit, user, context, requested, fallback=fallback, gpc=gpc, live=live)
        sticky, exposures = decision.sticky_updates, _exposure_events(decision, decision_id, kind, unit)
        if explain:
            experiences = snapshot["experiences"]
            for key, assignment in decision.assignments.items():
                assignment["explanation"] = assignment_explanation(experiences[key], assignment, user, live)
    if explain:
        for assignment in decision.assignments.values():
            assignment.setdefault("explanation", None)
    answer = {
        "decision_id": decision_id,
        "version": snapshot["version"],
        "assignments": decision.assignments,
        "unknown_experiences": decision.unknown,
    }
    return answer, sticky, exposures


def _exposure_events(decision: engine.Decision, decision_id: str, kind: str, unit: str) -> list[dict]:
    if not decision.exposures:
        return []
    ts = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": f"x{decision_id}{i}",
            "type": "exposure",
            "user_id": unit if kind == "user_id" else None,
            "anonymous_id": unit if kind == "anonymous_id" else None,
            "ts": ts,
            "session_id": "",
            "value": None,
            "properties": {**exposure, "source": "decide", "decision_id": decision_id},
        }
        for i, exposure in enumerate(decision.exposures)
    ]
