"""Event ingestion (request → Redis stream) and the drain (stream → PostgreSQL).

The stream holds one entry per accepted batch. The drain reads entries through a consumer group,
writes their events in one transaction (COPY into a staging table, then INSERT … ON CONFLICT DO
NOTHING on (project, event_id)), and only then acknowledges and deletes the entries. A drain killed
between reading and acknowledging leaves its entries pending; the next drain claims them once they
have been idle for KAIROS_DRAIN_CLAIM_IDLE_MS and writes them again, which the unique key makes
harmless. So every accepted event is stored exactly once.
"""

import logging
import os
import socket
import time
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import redis
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from personalization import redis_client, rkeys
from personalization.event_schema import BatchResult, batch_validate
from personalization.models import IdentityKind, Profile, ProfileIdentity

log = logging.getLogger(__name__)

_METRIC_TTL_SECONDS = 2 * 3600


def events_ingest(*, project_id: int, payload: object, pipe_extra=None) -> BatchResult:
    """Validate a batch and append the accepted events to the stream, in the request.

    Raises event_schema.BatchError for an unusable envelope and redis.RedisError when the stream
    cannot take the batch (the caller answers 503 so the client retries; nothing is half written).
    """
    result = batch_validate(payload)
    if not result.accepted:
        return result
    pipe = redis_client.fast().pipeline(transaction=False)
    pipe.xadd(
        rkeys.EVENTS_STREAM,
        {"p": project_id, "d": orjson.dumps(result.accepted), "r": datetime.now(UTC).isoformat()},
    )
    metric = rkeys.metric(project_id, "events", int(time.time() // 60))
    pipe.incrby(metric, len(result.accepted))
    pipe.expire(metric, _METRIC_TTL_SECONDS)
    if pipe_extra is not None:
        pipe_extra(pipe)
    pipe.execute()
    return result


def stream_ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _read_entries(client: redis.Redis, consumer: str, count: int, claim_idle_ms: int) -> list:
    """Entries abandoned by a dead consumer first, then new ones."""
    claimed = client.xautoclaim(
        rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP, consumer, min_idle_time=claim_idle_ms, start_id="0-0", count=count
    )
    entries = claimed[1]
    if entries:
        return entries
    fresh = client.xreadgroup(rkeys.EVENTS_GROUP, consumer, {rkeys.EVENTS_STREAM: ">"}, count=count)
    return fresh[0][1] if fresh else []


def events_drain(*, max_entries: int | None = None, claim_idle_ms: int | None = None, consumer: str = "") -> int:
    """Move one step of the stream into PostgreSQL; returns how many events were written or skipped."""
    client = redis_client.worker()
    stream_ensure_group(client)
    consumer = consumer or _consumer_name()
    count = max_entries or settings.KAIROS_DRAIN_ENTRIES
    idle = settings.KAIROS_DRAIN_CLAIM_IDLE_MS if claim_idle_ms is None else claim_idle_ms
    entries = _read_entries(client, consumer, count, idle)
    if not entries:
        return 0
    by_project: dict[int, list[dict]] = defaultdict(list)
    ids = []
    for entry_id, fields in entries:
        ids.append(entry_id)
        if not fields:  # deleted while pending: nothing left to write
            continue
        received = fields[b"r"].decode()
        for event in orjson.loads(fields[b"d"]):
            event["received_at"] = received
            by_project[int(fields[b"p"])].append(event)
    for attempt in range(3):
        try:
            with transaction.atomic():
                for project_id, events in by_project.items():
                    _write_project_events(project_id, events)
            break
        except IntegrityError:
            # Another drain created one of the same new profiles at the same moment; the retry sees it.
            if attempt == 2:
                raise
    pipe = client.pipeline(transaction=True)
    pipe.xack(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP, *ids)
    pipe.xdel(rkeys.EVENTS_STREAM, *ids)
    pipe.execute()
    return sum(len(events) for events in by_project.values())


def _write_project_events(project_id: int, events: list[dict]) -> None:
    profile_of = _profiles_resolve(project_id, events)
    exposures = [e for e in events if e["type"] == "exposure"]
    if exposures:
        _exposures_write(project_id, exposures, profile_of)
        events = [e for e in events if e["type"] != "exposure"]
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS drain_event ("
            " profile_id bigint, event_id varchar(64), type varchar(64), ts timestamptz,"
            " session_id varchar(64), value numeric(14,2), properties jsonb, received_at timestamptz"
            ") ON COMMIT DELETE ROWS"
        )
        with cursor.cursor.copy(
            "COPY drain_event (profile_id, event_id, type, ts, session_id, value, properties, received_at) FROM STDIN"
        ) as copy:
            for event in events:
                copy.write_row(
                    (
                        profile_of[event["event_id"]],
                        event["event_id"],
                        event["type"],
                        event["ts"],
                        event["session_id"],
                        event["value"],
                        orjson.dumps(event["properties"]).decode(),
                        event["received_at"],
                    )
                )
        cursor.execute(
            "INSERT INTO personalization_event"
            " (project_id, profile_id, event_id, type, ts, session_id, value, properties, received_at)"
            " SELECT %s, profile_id, event_id, type, ts, session_id, value, properties, received_at"
            " FROM drain_event ON CONFLICT (project_id, event_id) DO NOTHING",
            [project_id],
        )
        cursor.execute(
            "UPDATE personalization_profile p SET last_seen = GREATEST(p.last_seen, d.ts)"
            " FROM (SELECT profile_id, max(ts) AS ts FROM drain_event GROUP BY profile_id) d"
            " WHERE p.id = d.profile_id"
        )
        cursor.execute("TRUNCATE drain_event")


class _Identities:
    """Known ids of one project, loaded once per batch, updated as new profiles are created."""

    def __init__(self, project_id: int, events: list[dict]):
        self.project_id = project_id
        users = {e["user_id"] for e in events if e["user_id"]}
        anons = {e["anonymous_id"] for e in events if e["anonymous_id"]}
        rows = (
            ProfileIdentity.objects.filter(project_id=project_id, kind=IdentityKind.USER, value__in=users)
            .values_list("kind", "value", "profile_id", "profile__external_id")
            .union(
                ProfileIdentity.objects.filter(
                    project_id=project_id, kind=IdentityKind.ANONYMOUS, value__in=anons
                ).values_list("kind", "value", "profile_id", "profile__external_id"),
                all=True,
            )
        )
        self.ids: dict[tuple[str, str], int] = {}
        self.has_user: dict[int, bool] = {}
        for kind, value, profile_id, external_id in rows:
            self.ids[(kind, value)] = profile_id
            self.has_user[profile_id] = external_id is not None

    def get(self, kind: str, value: str | None) -> int | None:
        return self.ids.get((kind, value)) if value else None

    def add(self, kind: str, value: str, profile_id: int) -> None:
        ProfileIdentity.objects.create(project_id=self.project_id, profile_id=profile_id, kind=kind, value=value)
        self.ids[(kind, value)] = profile_id


def _profile_new(project_id: int, event: dict, external_id: str | None) -> int:
    ts = datetime.fromisoformat(event["ts"])
    profile = Profile.objects.create(project_id=project_id, external_id=external_id, first_seen=ts, last_seen=ts)
    return profile.pk


def _profiles_resolve(project_id: int, events: list[dict]) -> dict[str, int]:
    """Profile id for every event, creating and stitching profiles as the ids require.

    A user id seen with an anonymous id stitches them: an anonymous profile that logs in becomes the
    user's profile (or is merged into it when the user already had one).
    """
    known = _Identities(project_id, events)
    profile_of: dict[str, int] = {}
    merged_into: dict[int, int] = {}
    for event in events:
        user_id, anon_id = event["user_id"], event["anonymous_id"]
        by_user = known.get(IdentityKind.USER, user_id)
        by_anon = known.get(IdentityKind.ANONYMOUS, anon_id)
        if user_id and by_user is None:
            if by_anon is not None and not known.has_user.get(by_anon):
                Profile.objects.filter(pk=by_anon).update(external_id=user_id)
                by_user = by_anon
            else:
                by_user = _profile_new(project_id, event, user_id)
            known.add(IdentityKind.USER, user_id, by_user)
            known.has_user[by_user] = True
        if anon_id and by_anon is None:
            by_anon = by_user if by_user is not None else _profile_new(project_id, event, None)
            known.add(IdentityKind.ANONYMOUS, anon_id, by_anon)
            known.has_user.setdefault(by_anon, False)
        elif by_user is not None and by_anon is not None and by_anon != by_user and not known.has_user.get(by_anon):
            _profile_merge(project_id, source=by_anon, target=by_user)
            merged_into[by_anon] = by_user
            for key, value in known.ids.items():
                if value == by_anon:
                    known.ids[key] = by_user
        if event["type"] == "identify" and isinstance(event["properties"].get("attributes"), dict):
            _attributes_merge(by_user, event["properties"]["attributes"])
        profile_of[event["event_id"]] = by_user if by_user is not None else by_anon
    if merged_into:
        profile_of = {event_id: merged_into.get(pid, pid) for event_id, pid in profile_of.items()}
    return profile_of


def _profile_merge(project_id: int, *, source: int, target: int) -> None:
    """Fold an anonymous profile into the user profile it turned out to be."""
    from personalization.models import Event

    Event.objects.filter(profile_id=source).update(profile_id=target)
    ProfileIdentity.objects.filter(profile_id=source).update(profile_id=target)
    Profile.objects.filter(pk=source, project_id=project_id).delete()


def _attributes_merge(profile_id: int, attributes: dict) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE personalization_profile SET attributes = attributes || %s::jsonb WHERE id = %s",
            [orjson.dumps(attributes).decode(), profile_id],
        )


def _exposures_write(project_id: int, exposures: list[dict], profile_of: dict[str, int]) -> None:
    """Exposures (from decide or sent from outside) keep each person's first one per experience."""
    rows = []
    for event in exposures:
        props = event["properties"]
        holdout = props.get("holdout") is True or props.get("arm") in {"holdout_global", "holdout_experience"}
        arm = props.get("arm") or ("holdout_experience" if holdout else "variant")
        rows.append(
            (
                project_id,
                profile_of[event["event_id"]],
                str(props["experience"])[:64],
                "" if props.get("holdout") is True else str(props.get("variant") or "")[:64],
                arm,
                str(props.get("reason") or "")[:24],
                str(props.get("segment") or "")[:64],
                event["ts"],
                str(props.get("source") or "api")[:8],
            )
        )
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO personalization_exposure"
            " (project_id, profile_id, experience_key, variant_key, arm, reason, segment, exposed_at, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (project_id, experience_key, profile_id) DO NOTHING",
            rows,
        )
