"""The drain: the events stream → PostgreSQL.

The stream holds one entry per accepted batch (personalization.ingest.stream). The drain reads
entries through a consumer group, writes their events in one transaction (COPY straight into the
partitioned events table, whose trigger claims each (project, event_id) in the claims table; when
an event is already claimed, the batch is copied again without it), and only then acknowledges and
deletes the entries. A drain killed
between reading and acknowledging leaves its entries pending; the next drain claims them once they
have been idle for KAIROS_DRAIN_CLAIM_IDLE_MS and writes them again, which the claims' unique key
makes harmless. So every accepted event is stored exactly once, whatever its timestamp.

The profiles and identities those events need are resolved in bulk (personalization.people.profiles)
and committed just before, in a transaction of their own under a per-project lock, so several
drains can run side by side.
"""

import gc
import logging
import os
import random
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
import psycopg
import redis
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, OperationalError, connection, connections, transaction
from psycopg.types.json import set_json_dumps

from personalization import hooks, redis_client, rkeys
from personalization.decide.units import profiles_publish, units_stitch
from personalization.experiences.metric_values import metric_values_events_add, metric_values_exposures_fill
from personalization.ingest.dead_letters import dead_letters_write, text_storable
from personalization.ingest.stored_version import stored_version_bump
from personalization.ingest.stream import stream_ensure_group
from personalization.models import Experience, Project
from personalization.people.profiles import (
    id_array,
    newest_stamps,
    profiles_resolve,
    references_lock,
    row_checks_skip,
)
from personalization.people.subjects import profiles_consent_set
from personalization.signals import events_drained

log = logging.getLogger(__name__)

_WRITE_ATTEMPTS = 5
# deadlock detected, serialization failure; a unique or foreign key violation is a collision with
# another drain (a NOT NULL violation, say, is a bad event: no retry helps it)
_RETRY_SQLSTATES = {"40P01", "40001", "23505", "23503"}
# Failures caused by what an event holds, not by the database being away: the drain narrows the
# batch down to the events at fault and dead-letters them (OperationalError and Redis errors are
# infrastructure: the batch waits in the stream and is retried whole).
_DATA_ERRORS = (
    DataError,
    IntegrityError,
    ValidationError,  # a field Django cannot convert, e.g. a timestamp that is no time
    psycopg.DataError,
    psycopg.IntegrityError,
    ValueError,
    TypeError,
    KeyError,
)


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _read_entries(
    client: redis.Redis, consumer: str, count: int, claim_idle_ms: int, in_flight: frozenset = frozenset()
) -> list:
    """Entries abandoned by a dead consumer first, then new ones. `in_flight`: entries this drain is
    writing right now, which a short claim_idle_ms would otherwise hand back to it a second time."""
    try:
        claimed = client.xautoclaim(
            rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP, consumer, min_idle_time=claim_idle_ms, start_id="0-0", count=count
        )
        entries = [entry for entry in claimed[1] if entry[0] not in in_flight]
        if entries:
            return entries
        fresh = client.xreadgroup(rkeys.EVENTS_GROUP, consumer, {rkeys.EVENTS_STREAM: ">"}, count=count)
    except redis.ResponseError as error:
        if not str(error).startswith("NOGROUP"):
            raise
        # The stream went away under the drain (a Redis, or a cluster node, back without its data; an
        # emptied database): nothing to read from it. The group is made again for the next step, and
        # the drain goes on instead of exiting.
        stream_ensure_group(client)
        return []
    return fresh[0][1] if fresh else []


@dataclass
class _Step:
    """One step's events, as _entries_parse reads them from the stream entries."""

    by_project: dict[int, list[dict]]  # events per project
    counts: dict[int, int]  # events per project, to take off the waiting counts
    dead: list[tuple]  # dead letters for entries that are not even readable
    screened: bool = False  # _step_screen has run
    profiles: dict[int, dict[str, int]] = field(default_factory=dict)  # resolved ahead: project -> event id -> profile


def _read_parsed(
    client: redis.Redis,
    consumer: str,
    count: int,
    idle: int,
    in_flight: frozenset = frozenset(),
    resolve: bool = False,
) -> tuple[list, _Step]:
    """One step's entries and their events; with `resolve` also screened and their people resolved
    (_step_resolve), which needs the database: run in a thread, on that thread's own connection."""
    entries = _read_entries(client, consumer, count, idle, in_flight)
    step = _entries_parse(entries)
    if resolve and step.by_project:
        _step_screen(client, step)
        _step_resolve(step)
    return entries, step


def _step_screen(client: redis.Redis, step: _Step) -> None:
    """What is left out or added before anything is written: events of deleted projects and of erased
    subjects, and the segments of exposures sent from outside."""
    _drop_deleted_projects(step.by_project)
    _drop_suppressed(step.by_project)
    _exposures_segments_read(client, step.by_project)
    step.screened = True


def _step_resolve(step: _Step) -> None:
    """The step's profiles, resolved (and the new ones committed) while the step before is still being
    written. A batch that merges profiles is left to the step itself (its merge would move rows the
    step before may still be writing), and so is one whose resolving fails here: it is resolved
    again, in order, where a failure is handled (retried, narrowed down to the events at fault)."""
    connection.close_if_unusable_or_obsolete()
    for project_id, events in step.by_project.items():
        try:
            profile_of = profiles_resolve(project_id, events, merges=False)
        except (DatabaseError, *_DATA_ERRORS) as error:
            log.info("drain: resolving ahead failed (%s); the step resolves again", text_storable(str(error))[:200])
            continue
        if profile_of is not None:
            step.profiles[project_id] = profile_of


def _drain_options(max_entries: int | None, claim_idle_ms: int | None, consumer: str) -> tuple:
    client = redis_client.worker()
    stream_ensure_group(client)
    count = max_entries or settings.KAIROS_DRAIN_ENTRIES
    idle = settings.KAIROS_DRAIN_CLAIM_IDLE_MS if claim_idle_ms is None else claim_idle_ms
    return client, consumer or _consumer_name(), count, idle


def events_drain(*, max_entries: int | None = None, claim_idle_ms: int | None = None, consumer: str = "") -> int:
    """Move one step of the stream into PostgreSQL; returns how many events were stored, skipped as
    duplicates or dead-lettered."""
    client, consumer, count, idle = _drain_options(max_entries, claim_idle_ms, consumer)
    return _entries_drain(client, *_read_parsed(client, consumer, count, idle))


def events_drain_backlog(
    *,
    budget_seconds: float | None = None,
    max_entries: int | None = None,
    claim_idle_ms: int | None = None,
    consumer: str = "",
) -> int:
    """Drain step after step until the stream is empty or `budget_seconds` have passed (the step under
    way is finished); returns what the steps moved.

    Each next step's entries are read, decoded, screened and their people resolved in a thread while
    PostgreSQL writes the current step's events. The thread has its own database connection: the
    profiles and identities it creates are committed before the current step's events are, as they
    would be in order, and its reads see everything the steps before committed. Called inside a
    transaction (whose rows a second connection cannot see) the thread only reads and decodes.
    The read starts when the step's COPY does: from there until the COPY ends this thread only
    waits for PostgreSQL, so the reader's Python does not compete with this thread's for the
    interpreter lock (started with the step, it slowed the step's own planning). What that costs:
    if a step fails, or the process dies, the entries read ahead stay pending for this consumer and
    are claimed again once idle (KAIROS_DRAIN_CLAIM_IDLE_MS), as the failed step's own are; nothing
    is lost or stored twice (their new profiles are kept, and found when the entries are drained).
    """
    client, consumer, count, idle = _drain_options(max_entries, claim_idle_ms, consumer)
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    resolve = not connection.in_atomic_block
    moved = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drain-read") as reader:
        try:
            entries, step = _read_parsed(client, consumer, count, idle)
            while entries:
                ahead = []
                if deadline is None or time.monotonic() < deadline:
                    in_flight = frozenset(entry_id for entry_id, _ in entries)

                    def read_ahead(in_flight=in_flight, ahead=ahead) -> None:
                        if not ahead:
                            work = reader.submit(_read_parsed, client, consumer, count, idle, in_flight, resolve)
                            ahead.append(work)

                    token = _copy_started.set(read_ahead)
                    try:
                        moved += _entries_drain(client, entries, step)
                    finally:
                        _copy_started.reset(token)
                    read_ahead()  # a step that copied nothing (all duplicates, all dropped)
                else:
                    moved += _entries_drain(client, entries, step)
                if not ahead:
                    break
                entries, step = ahead[0].result()
        finally:
            reader.submit(connections.close_all).result()  # the thread's connection, if it opened one
    return moved


# What to start once the step's COPY is under way (events_drain_backlog's read of the next step).
_copy_started: ContextVar[Callable[[], None] | None] = ContextVar("drain_copy_started", default=None)


def _entries_drain(client: redis.Redis, entries: list, step: _Step) -> int:
    if not entries:
        return 0
    with _collector_paused():
        return _entries_step(client, entries, step)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a step (the reader thread's decoding of the next
    one included), its young generation collected at the end.

    A step makes a dozen container objects per event (decoded events, COPY rows, the profile plan)
    and the collector ran every 700 of them, each time walking every young object still alive: 3-5
    ms of CPU per 1,000 events, a quarter of the drain's Python. What a step makes is freed by
    reference counting; the rare cycle (a traceback kept by a retried error) waits for the step's end.
    """
    if not gc.isenabled():  # paused by the caller: theirs to resume
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)


def _entries_step(client: redis.Redis, entries: list, step: _Step) -> int:
    if not step.screened:
        _step_screen(client, step)
    stored, profiles, refused = _events_store(step.by_project, step.profiles)
    dead = step.dead + refused
    if dead:
        dead_letters_write(dead=dead)
    stored_version_bump(client=client, stored=stored)  # before the ack: a crash between them re-stores, re-bumps
    _entries_ack(client, [entry_id for entry_id, _ in entries], step.counts)
    for project_id, events in stored.items():
        profile_of = profiles[project_id]
        _identities_publish(project_id, events, profile_of)
        _consents_apply(project_id, events, profile_of)
        # Exposures are what decide did, not what the person did: the behavior segments and intents read
        # the events, and a profile whose only news is an exposure would be folded in again for nothing
        # (every visitor decide served, re-embedded after every drain step).
        behaved = sorted({profile_of[e["event_id"]] for e in events if e["type"] != "exposure"})
        if behaved:
            events_drained.send(sender=None, project_id=project_id, profile_ids=behaved)
    return sum(len(events) for events in stored.values()) + len(dead)


def _entries_parse(entries: list) -> _Step:
    """The events of stream entries, by project."""
    by_project: dict[int, list[dict]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    dead: list[tuple] = []
    for entry_id, fields in entries:
        if not fields:  # deleted while pending: nothing left to write
            continue
        try:
            project_id = int(fields[b"p"])
            received = fields[b"r"].decode()
            events = orjson.loads(fields[b"d"])
            for event in events:
                event["received_at"] = received
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            dead.append((None, {"stream_entry": entry_id.decode(), "fields": fields}, f"unreadable entry: {error}"))
            continue
        by_project[project_id].extend(events)
        counts[project_id] += len(events)
    return _Step(by_project, counts, dead)


def _events_store(by_project: dict[int, list[dict]], resolved: dict) -> tuple[dict, dict, list[tuple]]:
    """Write every project's events; when that fails for a reason in the data, narrow it down to the
    events at fault (halving), store the rest and return those as dead letters. Returns the events
    stored per project, their profiles, and the dead letters (project, event, error). `resolved`:
    the profiles of projects resolved ahead (_step_resolve)."""
    try:
        return by_project, _events_write(by_project, resolved), []
    except _DATA_ERRORS as error:
        log.warning("drain: a batch failed for a data reason (%s); narrowing it down", text_storable(str(error))[:200])
    stored: dict[int, list[dict]] = defaultdict(list)
    profiles: dict[int, dict[str, int]] = defaultdict(dict)
    dead: list[tuple] = []

    def narrow(project_id: int, events: list[dict]) -> None:
        try:
            profiles[project_id].update(_events_write({project_id: events})[project_id])
            stored[project_id].extend(events)
        except _DATA_ERRORS as error:
            if len(events) == 1:
                dead.append((project_id, events[0], f"{type(error).__name__}: {error}"))
                return
            middle = len(events) // 2  # in order, so identifies stitch as they would have
            narrow(project_id, events[:middle])
            narrow(project_id, events[middle:])

    for project_id, events in sorted(by_project.items()):
        narrow(project_id, events)
    return stored, profiles, dead


def _events_write(by_project: dict[int, list[dict]], resolved: dict | None = None) -> dict[int, dict[str, int]]:
    """Profiles, then events and exposures of every project in one transaction; retried when drains
    running side by side collide. Returns each project's event id -> profile id. `resolved`: profiles
    already resolved for some projects, used by the first attempt only."""
    for attempt in range(_WRITE_ATTEMPTS):
        try:
            ahead = (resolved or {}) if attempt == 0 else {}
            profiles = {
                project_id: ahead[project_id] if project_id in ahead else profiles_resolve(project_id, events)
                for project_id, events in by_project.items()
            }
            with transaction.atomic():
                # In project order: the profile locks below are then always taken in one global order.
                for project_id, events in sorted(by_project.items()):
                    _write_project_events(project_id, events, profiles[project_id])
            return profiles
        except (IntegrityError, OperationalError) as error:
            # Drains running side by side can collide: a profile merged away under another drain's
            # events, a deadlock on shared rows. The transaction rolled back whole; the retry starts
            # from what the other drain committed.
            sqlstate = getattr(error.__cause__, "sqlstate", "")
            retryable = sqlstate in _RETRY_SQLSTATES
            if not retryable or attempt == _WRITE_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise AssertionError("unreachable: the last attempt returns or raises")


def _identities_publish(project_id: int, events: list[dict], profile_of: dict[str, int]) -> None:
    """After an identify: decide must see the profile's attributes under every id, and the user id
    keeps the variants the visitor was shown while anonymous."""

    identifies = [e for e in events if e["type"] == "identify"]
    if not identifies:
        return
    pairs = [(e["anonymous_id"], e["user_id"]) for e in identifies if e["anonymous_id"]]  # a user id alone is fine
    if pairs:
        units_stitch(project_id=project_id, pairs=pairs)
    profiles_publish(project_id=project_id, profile_ids=sorted({profile_of[e["event_id"]] for e in identifies}))


def _exposures_segments_read(client: redis.Redis, by_project: dict[int, list[dict]]) -> None:
    """Exposures sent from outside get the person's behavior segments as decide would read them now:
    the "segs" of their unit hash (decide's own exposures carry what it read). Only for exposures
    that happened shortly before they were received: today's segments say nothing sure about an
    exposure a week ago (late or imported history), which stays unknown (None), like every
    exposure when Redis fails here; the Lift page counts those rather than the batch waiting.
    One pipelined round trip per batch, before the transaction."""
    outside = []
    for project_id, events in by_project.items():
        for event in events:
            properties = event.get("properties")
            if (
                event.get("type") != "exposure"
                or not isinstance(properties, dict)
                or properties.get("source") == "decide"
            ):
                continue
            units = [u for u in (event.get("user_id"), event.get("anonymous_id")) if isinstance(u, str) and u]
            outside.append((project_id, event, units))
    if not outside:
        return
    pipe = client.pipeline(transaction=False)
    for project_id, _, units in outside:
        for unit in units:
            pipe.hget(rkeys.unit(project_id, unit), "segs")
    try:
        replies = iter(pipe.execute())
    except redis.RedisError:
        log.warning("drain: unit hashes unreadable; exposures sent from outside keep no segments", exc_info=True)
        replies = None
    for _, event, units in outside:
        found = [next(replies) for _ in units] if replies is not None else []
        segs = None
        if replies is not None and _exposed_lately(event):
            # The user id's hash first, as decide is usually asked by it once the person is known; no
            # "segs" anywhere means in no segment (decide would target them as such).
            segs = next((value for value in found if value is not None), b"").decode()
        event["properties"]["segs"] = segs


SEGMENTS_LOOKUP_WITHIN = timedelta(hours=24)


def _exposed_lately(event: dict) -> bool:
    try:
        late = datetime.fromisoformat(event["received_at"]) - datetime.fromisoformat(event["ts"])
    except (KeyError, TypeError, ValueError):
        return False
    return late <= SEGMENTS_LOOKUP_WITHIN


def _exposure_segment_keys(raw) -> list[str] | None:
    """The "segs" an exposure carries as a list of keys; None (not known) when it carries none.
    Segment keys are at most 64 characters: a longer word is no key (and cut short it would name
    another), so it is left out."""
    if not isinstance(raw, str):
        return None
    return [key for key in dict.fromkeys(raw.split()) if len(key) <= 64][:_MAX_EXPOSURE_SEGMENTS]


_MAX_EXPOSURE_SEGMENTS = 200


def _drop_suppressed(by_project: dict[int, list[dict]]) -> None:
    """Events of erased subjects (the privacy suppression list) are dropped, so they are never
    profiled again, whenever the events were sent. Privacy answers through a hook; without it this
    raises (hooks.suppression.when_missing) before anything is stored or acknowledged."""
    for project_id, events in list(by_project.items()):
        ids = {i for e in events for i in (e["user_id"], e["anonymous_id"]) if i}
        erased = hooks.suppressed_among(project_id=project_id, identifiers=ids)
        if erased:
            kept = [e for e in events if e["user_id"] not in erased and e["anonymous_id"] not in erased]
            log.info("drain: dropping %d events of erased subjects", len(events) - len(kept))
            if kept:
                by_project[project_id] = kept
            else:
                del by_project[project_id]


def _consents_apply(project_id: int, events: list[dict], profile_of: dict[str, int]) -> None:
    """`consent` events (the snippet's Kairos.consent, the REST API) record purpose → granted on the profile."""

    consents: dict[int, dict] = {}
    for event in events:
        if event["type"] == "consent":
            purposes = {k: v for k, v in event["properties"].items() if isinstance(v, bool)}
            consents.setdefault(profile_of[event["event_id"]], {}).update(purposes)
    if consents:
        profiles_consent_set(project_id=project_id, consents=consents)


def _drop_deleted_projects(by_project: dict[int, list[dict]]) -> None:
    """Events of a project deleted after they were accepted have nowhere to go; keeping them would
    block the stream forever, so they are dropped (and logged)."""

    existing = set(Project.objects.filter(pk__in=list(by_project)).values_list("pk", flat=True))
    for project_id in set(by_project) - existing:
        log.warning("drain: dropping %d events of deleted project %s", len(by_project[project_id]), project_id)
        del by_project[project_id]


# An empty stream holds nothing for anyone: the per-project counts start again from zero, so
# counts that drifted (entries removed by hand, a Redis restored from an older file) heal by themselves.
_QUEUED_RESET_LUA = "if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end"


def _entries_ack(client: redis.Redis, ids: list, counts: dict[int, int] | None = None) -> None:
    """Only after the events are committed: a drain that dies before this leaves the entries pending.
    `counts` (project -> events) come off the projects' waiting counts in the same transaction."""
    pipe = client.pipeline(transaction=True)
    pipe.xack(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP, *ids)
    pipe.xdel(rkeys.EVENTS_STREAM, *ids)
    for project_id, count in (counts or {}).items():
        pipe.hincrby(rkeys.EVENTS_QUEUED, str(project_id), -count)
    # EVAL as a raw command: redis-py's Redis Cluster pipeline has no eval().
    pipe.execute_command("EVAL", _QUEUED_RESET_LUA, 2, rkeys.EVENTS_STREAM, rkeys.EVENTS_QUEUED)
    pipe.execute()


def _write_project_events(project_id: int, events: list[dict], profile_of: dict[str, int]) -> None:
    # Events first, then exposures: a new exposure's backfill then sees this batch's events, and
    # the events' update sees the exposures already stored, so each pair is counted exactly once.
    exposures = [e for e in events if e["type"] == "exposure"]
    events = [e for e in events if e["type"] != "exposure"]
    profile_ids = sorted(set(profile_of.values()))
    latest: list[dict[int, str]] = []

    def stamps() -> None:  # pure Python: done while PostgreSQL works through the COPY
        if not latest:
            latest.append(newest_stamps([(profile_of[event["event_id"]], event["ts"]) for event in events]))

    with connection.cursor() as cursor:
        row_checks_skip(cursor)
        references_lock(cursor, project_id=project_id, profile_ids=profile_ids)
        inserted = _events_insert(cursor, project_id, events, profile_of, meanwhile=stamps)
        stamps()  # when nothing was copied
        # From here to commit, drains sharing a person take turns. Without this, one drain storing a
        # person's exposure and another storing their purchase at the same moment each see only the
        # other's committed rows: the backfill misses the purchase, the update misses the exposure,
        # and the conversion is never attributed. Locked in id order: drains wait, never deadlock.
        cursor.execute(
            "SELECT 1 FROM personalization_profile WHERE id = ANY(%s::bigint[]) ORDER BY id FOR NO KEY UPDATE",
            [id_array(profile_ids)],
        )
        _outcomes_add(cursor, inserted)
        metric_values_events_add(cursor, project_id=project_id, inserted=inserted)
        _last_seen_advance(cursor, latest[0])
    if exposures:
        _exposures_write(project_id, exposures, profile_of)


_EVENT_COLUMNS = "(project_id, profile_id, event_id, type, ts, session_id, value, properties, received_at)"
# Binary: PostgreSQL takes each value as it is stored instead of parsing text (times, numbers): a
# tenth of its time in the COPY.
_EVENTS_COPY = f"COPY personalization_event {_EVENT_COLUMNS} FROM STDIN (FORMAT BINARY)"
_EVENTS_COPY_TYPES = ["int8", "int8", "text", "text", "timestamptz", "text", "numeric", "jsonb", "timestamptz"]
_CLAIMS_UNIQUE = "personalization_eventclaim_pkey"


def _events_insert(
    cursor, project_id: int, events: list[dict], profile_of: dict[str, int], meanwhile: Callable | None = None
) -> list[tuple]:
    """Store a batch's events once per (project, event_id); returns the rows this call stored.
    `meanwhile` (may run more than once) is called once the rows are sent, while PostgreSQL still
    works through them: the COPY's PostgreSQL side takes about three times its Python side.

    Straight COPY into the (partitioned) table, in a savepoint: PostgreSQL inserts each chunk while
    the next one is formatted, and no staging table is written and read again. The table cannot
    hold the unique (project, event_id); the claims table (EventClaim) does, and the statement's
    trigger writes the batch's claims from the rows copied (migration 0013). A client's retry inside
    the batch is dropped here, the first copy kept. When an event is already claimed (a batch
    drained again after a crash, a retry that arrived in another batch, maybe a month later with the
    server's time on it), the claims' key fails the COPY, the savepoint rolls it back, and the
    batch is copied again without the events already claimed. A drain claiming the same id at the
    same moment fails this transaction on the key, and _events_write retries it.
    """
    if not events:
        return []
    rows: list[tuple] = []
    # Each row is made as the COPY takes it, so making them overlaps PostgreSQL's inserting too.
    produce = _event_rows(project_id, events, profile_of, rows)
    try:
        # Errors as Django's, like every other statement of the write: a deadlock with another drain
        # (OperationalError 40P01) is then retried by _events_write, a bad value narrowed down.
        with transaction.atomic():
            _events_copy(cursor, produce, meanwhile)
        return rows
    except IntegrityError as error:
        if getattr(getattr(error.__cause__, "diag", None), "constraint_name", None) != _CLAIMS_UNIQUE:
            raise
    rows.extend(produce)  # none left, usually: the claims' key fails at the end of the statement
    cursor.execute(
        "SELECT event_id FROM personalization_eventclaim WHERE project_id = %s AND event_id = ANY(%s::text[])",
        [project_id, [row[2] for row in rows]],
    )
    claimed = {event_id for (event_id,) in cursor.fetchall()}
    rows = [row for row in rows if row[2] not in claimed]
    _events_copy(cursor, rows, meanwhile)
    return rows


def _event_rows(project_id: int, events: list[dict], profile_of: dict[str, int], made: list[tuple]) -> Iterator[tuple]:
    """The COPY rows of `events` (values as the binary COPY takes them), each also appended to `made`;
    a client's retry inside the batch is left out (the first copy kept)."""
    seen: set[str] = set()
    append, parse = made.append, datetime.fromisoformat
    received: dict[str, datetime] = {}  # one time per stream entry
    for event in events:
        event_id = event["event_id"]
        if event_id in seen:
            continue
        seen.add(event_id)
        value, arrived = event["value"], event["received_at"]
        if (received_at := received.get(arrived)) is None:
            received_at = received[arrived] = parse(arrived)
        row = (
            project_id,
            profile_of[event_id],
            event_id,
            event["type"],
            parse(event["ts"]),
            event["session_id"],
            # As the text of the number, the way it was sent: numeric(14,2) rounds it as it always has.
            None if value is None else Decimal(str(value)),
            event["properties"],
            received_at,
        )
        append(row)
        yield row


def _events_copy(cursor, rows: Iterable[tuple], meanwhile: Callable | None = None) -> None:
    if isinstance(rows, list) and not rows:
        return
    set_json_dumps(orjson.dumps, context=cursor.cursor)  # properties: dicts, serialized by orjson as everywhere
    with connection.wrap_database_errors, cursor.cursor.copy(_EVENTS_COPY) as copy:
        copy.set_types(_EVENTS_COPY_TYPES)
        write = copy.write_row
        for row in rows:
            write(row)
        # All but the last buffer is sent and PostgreSQL is inserting: work that needs no database
        # now costs the step no time (the next step's read, see events_drain_backlog).
        for work in (_copy_started.get(), meanwhile):
            if work is not None:
                work()


def _outcomes_add(cursor, inserted: list[tuple]) -> None:
    """Count the stored events into the outcomes of the exposures already stored for their people.

    Only events this batch inserted count (a duplicate is skipped), so draining a batch again after
    a crash never counts a conversion twice. Most people have no exposure, and most events are no
    goal: one indexed read of the people's exposures' goals picks the few events that can count.
    """
    profile_ids = sorted({row[1] for row in inserted})
    cursor.execute(
        "SELECT DISTINCT profile_id, goal FROM personalization_exposure WHERE profile_id = ANY(%s::bigint[])",
        [id_array(profile_ids)],
    )
    goals = set(cursor.fetchall())
    if not goals:
        return
    exposed = {profile_id for profile_id, _ in goals}
    counted = [row for row in inserted if row[1] in exposed and (row[3] == "purchase" or (row[1], row[3]) in goals)]
    if counted:
        cursor.execute(
            _OUTCOMES_SQL,
            [
                [row[1] for row in counted],
                [row[3] for row in counted],
                [row[4] for row in counted],
                [None if row[6] is None else str(row[6]) for row in counted],  # numeric(14,2) rounds it as stored
            ],
        )


_OUTCOMES_SQL = """
WITH inserted AS (
    SELECT profile_id, type, ts, value::numeric(14,2) AS value
    FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::text[]) AS i(profile_id, type, ts, value)
),
outcome AS (
    SELECT x.id,
           count(*) FILTER (WHERE i.type = x.goal) AS goals,
           coalesce(sum(i.value) FILTER (WHERE i.type = 'purchase'), 0) AS revenue
    FROM inserted i
    JOIN personalization_exposure x ON x.profile_id = i.profile_id
    WHERE (i.type = x.goal OR i.type = 'purchase')
      AND i.ts >= x.exposed_at AND i.ts <= x.exposed_at + x.window_hours * interval '1 hour'
    GROUP BY x.id
)
UPDATE personalization_exposure x
SET conversions = x.conversions + o.goals, converted = x.converted OR o.goals > 0, revenue = x.revenue + o.revenue
FROM outcome o WHERE x.id = o.id
"""
# The window includes its end: a conversion exactly window_hours after the exposure counts.


def _last_seen_advance(cursor, latest: dict[int, str]) -> None:
    """Move each person's last_seen to their newest event of the batch (`latest`: profile -> time).
    Only rows that move forward are written (profiles this batch created already carry it:
    people.profiles). The rows are already locked, in id order, by the step (_write_project_events):
    drains running side by side wait for each other there instead of deadlocking here."""
    if latest:
        cursor.execute(_LAST_SEEN_SQL, [id_array(latest), "{" + ",".join(latest.values()) + "}"])


_LAST_SEEN_SQL = """
UPDATE personalization_profile p SET last_seen = d.ts
FROM unnest(%s::bigint[], %s::timestamptz[]) AS d(profile_id, ts)
WHERE p.id = d.profile_id AND p.last_seen < d.ts
"""

_EXPOSURES_BACKFILL_SQL = """
UPDATE personalization_exposure x
SET conversions = o.goals, converted = o.goals > 0, revenue = o.revenue, pre_activity = o.pre
FROM (
    SELECT x2.id,
        (SELECT count(*) FROM personalization_event e WHERE e.profile_id = x2.profile_id AND e.type = x2.goal
           AND e.ts >= x2.exposed_at AND e.ts <= x2.exposed_at + x2.window_hours * interval '1 hour') AS goals,
        (SELECT coalesce(sum(e.value), 0) FROM personalization_event e
         WHERE e.profile_id = x2.profile_id AND e.type = 'purchase'
           AND e.ts >= x2.exposed_at AND e.ts <= x2.exposed_at + x2.window_hours * interval '1 hour') AS revenue,
        (SELECT count(*) FROM personalization_event e WHERE e.profile_id = x2.profile_id
           AND e.ts >= x2.exposed_at - interval '14 days' AND e.ts < x2.exposed_at) AS pre
    FROM personalization_exposure x2 WHERE x2.id = ANY(%s)
) o
WHERE x.id = o.id
"""


def _exposures_write(project_id: int, exposures: list[dict], profile_of: dict[str, int]) -> None:
    """Exposures (from decide or sent from outside) keep each person's first one per experience.

    A new exposure's outcomes are computed from the events already stored (an outside tool may send
    its exposures after the conversions); later events update them as they are drained. Goal and
    window are the registered experience's; decide's own exposures carry the same values, which
    serve only for an experience deleted in between.
    """

    keys = {str(e["properties"]["experience"]) for e in exposures}
    configured = {
        key: (goal, hours)
        for key, goal, hours in Experience.objects.filter(project_id=project_id, key__in=keys).values_list(
            "key", "goal_event", "attribution_hours"
        )
    }
    rows = []
    for event in exposures:
        props = event["properties"]
        holdout = props.get("holdout") is True
        arm = props.get("arm") or ("holdout_experience" if holdout else "variant")
        goal, hours = configured.get(str(props["experience"]), (props.get("goal"), props.get("window_hours")))
        rows.append(
            (
                project_id,
                profile_of[event["event_id"]],
                str(props["experience"])[:64],
                "" if holdout else str(props.get("variant") or "")[:64],
                arm,
                str(props.get("reason") or "")[:24],
                str(props.get("segment") or "")[:64],
                _exposure_segment_keys(props.get("segs")),
                _exposure_live(props.get("live")),
                event["ts"],
                str(props.get("source") or "api")[:8],
                str(goal or "purchase")[:64],
                _window_hours(hours),
            )
        )
    with connection.cursor() as cursor:
        cursor.cursor.executemany(_EXPOSURE_INSERT_SQL, [(*row[:3], *row) for row in rows], returning=True)
        new_ids = []
        while True:
            new_ids.extend(row[0] for row in cursor.cursor.fetchall())
            if not cursor.cursor.nextset():
                break
        if new_ids:
            cursor.execute(_EXPOSURES_BACKFILL_SQL, [new_ids])
            metric_values_exposures_fill(cursor, project_id=project_id, exposure_ids=new_ids)


# The exposures table is partitioned by month and cannot hold the unique (project, experience,
# profile): the exposure is written only when its claim (ExposureClaim) is, in one statement.
_EXPOSURE_INSERT_SQL = """
WITH claimed AS (
    INSERT INTO personalization_exposureclaim (project_id, profile_id, experience_key) VALUES (%s, %s, %s)
    ON CONFLICT (project_id, profile_id, experience_key) DO NOTHING
    RETURNING 1
)
INSERT INTO personalization_exposure (project_id, profile_id, experience_key, variant_key, arm, reason, segment,
    behavior_segments, live, exposed_at, source, goal, window_hours, converted, conversions, revenue, pre_activity)
SELECT %s::bigint, %s::bigint, %s, %s, %s, %s, %s, %s::varchar(64)[], %s::jsonb, %s::timestamptz, %s, %s,
    %s::integer, false, 0, 0, 0
FROM claimed
RETURNING id
"""

_LIVE_MAX_CHARS = 2048


def _exposure_live(raw) -> str | None:
    """The live facts an exposure carries (decide's: engine.facts_record) as JSON; None (not known)
    for anything else, or for more than a record of stage and facts can be."""
    if not isinstance(raw, dict):
        return None
    text = orjson.dumps(raw).decode()
    return text if len(text) <= _LIVE_MAX_CHARS else None


def _window_hours(raw) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 24 * 365:
        return raw
    return 72
