"""The registry of personal data locations: every table and Redis key holding data about a person,
with how to export it, erase it, merge it (when an anonymous profile turns out to be a known user)
and verify it is gone.

Export, erasure, objection, profile merge and the Art. 30 record walk this list and nothing else.
tests/privacy/test_registry.py fails when a model pointing at a profile, or a Redis key marked
PERSONAL in personalization/rkeys.py, has no location here.

To declare a table, call `table(...)` below: the handlers come from the model and the field that
points at the profile. A location that is not a plain table passes its own handlers to `Location`.
Order matters: erasure walks the locations in order, so rows pointing at a profile come before the
profile, and the stream comes first so no pending event re-creates what was just deleted.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from django.apps import apps
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Q

from personalization.people import subjects as subject_data

ERASE_CHUNK = 20_000
EXPORT_CHUNK = 2_000


@dataclass(frozen=True)
class Subject:
    """One person in one project: their profiles and every id (user or anonymous) they are known by."""

    project_id: int
    profile_ids: tuple[int, ...]
    unit_ids: tuple[str, ...]


@dataclass(frozen=True)
class Location:
    """Where data about a person lives, what it is for, and the handlers that act on it."""

    name: str
    store: str  # "PostgreSQL" or "Redis"
    category: str  # category of personal data (Art. 30 (1)(c))
    purpose: str
    retention: str
    mechanism: str  # how erase() removes it, as the certificate says
    columns: tuple[str, ...]  # the export's CSV columns, in order
    export: Callable[[Subject], Iterator[dict]]
    erase: Callable[[Subject, Callable[[int], None]], int]  # (subject, progress(n)) -> rows removed
    verify: Callable[[Subject], int]  # rows or keys still there (0 once erased)
    merge: Callable[[int, int], None] | None = None  # (source profile, target profile)
    # For tables: the SELECT of `columns` for a subject, composed (no parameters left), so exports
    # can let PostgreSQL write the JSON and CSV instead of converting rows in Python.
    sql: Callable[[Subject], str] | None = None
    profiling: bool = False  # derived by profiling: deleted on objection (Art. 21)
    model: str = ""  # app_label.Model of a table location
    redis_key: str = ""  # name in personalization/rkeys.py of a Redis location


_LOCATIONS: dict[str, Location] = {}


def register(location: Location) -> Location:
    if location.name in _LOCATIONS:
        raise ValueError(f"privacy registry: {location.name!r} is registered twice")
    _LOCATIONS[location.name] = location
    return location


def locations() -> list[Location]:
    return list(_LOCATIONS.values())


def location(name: str) -> Location:
    return _LOCATIONS[name]


def table(
    *,
    name: str,
    model: str,
    columns: tuple[str, ...],
    category: str,
    purpose: str,
    retention: str,
    profile_field: str = "profile",
    id_fields: tuple[str, ...] = (),
    profiling: bool = False,
    merge: Callable[[int, int], None] | None = None,
) -> Location:
    """A table whose rows belong to the profile named by `profile_field` ("pk" for the profile
    itself, "" for rows without one), or hold one of the person's raw ids in an `id_fields` column
    (dead letters; and a second way to find identities and profiles, so verification scans for the
    identifiers themselves). Rows move to the surviving profile on a merge unless `merge` says otherwise."""

    def rows(subject: Subject):
        cls = apps.get_model(model)
        query = Q(pk__in=[])
        if profile_field:
            field = "pk" if profile_field == "pk" else f"{profile_field}_id"
            query |= Q(**{f"{field}__in": subject.profile_ids})
        for id_field in id_fields:
            query |= Q(project_id=subject.project_id, **{f"{id_field}__in": subject.unit_ids})
        return cls.objects.filter(query)

    def export(subject: Subject) -> Iterator[dict]:
        for row in rows(subject).order_by("pk").values_list(*columns).iterator(chunk_size=EXPORT_CHUNK):
            yield dict(zip(columns, row, strict=True))

    def sql(subject: Subject) -> str:
        try:
            query, params = rows(subject).order_by("pk").values(*columns).query.sql_with_params()
        except EmptyResultSet:  # nothing to find the subject by: a query of no rows, same columns
            none = apps.get_model(model).objects.filter(pk__isnull=True).values(*columns)
            query, params = none.query.sql_with_params()
        return connection.ops.compose_sql(query, params)

    def erase(subject: Subject, progress: Callable[[int], None]) -> int:
        removed = 0
        # One transaction per chunk: a job killed midway keeps what it deleted and starts again
        # from what is left, and no lock is held over a whole subject's history.
        while True:
            with transaction.atomic():
                cls = apps.get_model(model)
                chunk = rows(subject).values("pk")[:ERASE_CHUNK]  # a subquery: no ids held in Python
                deleted = cls.objects.filter(pk__in=chunk).delete()[1].get(cls._meta.label, 0)
            removed += deleted
            progress(deleted)
            if deleted < ERASE_CHUNK:
                return removed

    def move(source: int, target: int) -> None:
        apps.get_model(model).objects.filter(**{f"{profile_field}_id": source}).update(
            **{f"{profile_field}_id": target}
        )

    return Location(
        name=name,
        store="PostgreSQL",
        category=category,
        purpose=purpose,
        retention=retention,
        mechanism=f"DELETE in chunks of {ERASE_CHUNK:,} rows, one transaction each",
        columns=columns,
        export=export,
        sql=sql,
        erase=erase,
        verify=lambda subject: rows(subject).count(),
        merge=merge if merge is not None else (None if profile_field in ("", "pk") else move),
        profiling=profiling,
        model=model,
    )


def _exposures_merge(source: int, target: int) -> None:
    """Exposures keep one row per experience: the earlier of the two, since analysis counts from a
    person's first exposure."""
    exposure = apps.get_model("personalization.Exposure")
    table_name = exposure._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table_name} later USING {table_name} earlier"
            " WHERE later.profile_id IN (%s, %s) AND earlier.profile_id IN (%s, %s)"
            " AND later.profile_id <> earlier.profile_id AND later.experience_key = earlier.experience_key"
            " AND (later.exposed_at, later.id) > (earlier.exposed_at, earlier.id)",
            [source, target, source, target],
        )
    exposure.objects.filter(profile_id=source).update(profile_id=target)


def _profile_merge(source: int, target: int) -> None:
    apps.get_model("personalization.Profile").objects.filter(pk=source).delete()


def _count_erase(delete: Callable[..., int]) -> Callable[[Subject, Callable[[int], None]], int]:
    def erase(subject: Subject, progress: Callable[[int], None]) -> int:
        removed = delete(project_id=subject.project_id, unit_ids=list(subject.unit_ids))
        progress(removed)
        return removed

    return erase


def subject_merge(*, source: int, target: int) -> None:
    """Fold profile `source` into `target`: every location moves its rows, the profile goes last."""
    for loc in locations():
        if loc.merge is not None and loc.model != "personalization.Profile":
            loc.merge(source, target)
    location("profiles").merge(source, target)


def _units(fn: Callable[..., object]) -> Callable[[Subject], object]:
    return lambda subject: fn(project_id=subject.project_id, unit_ids=list(subject.unit_ids))


# --- the locations, in erasure order ---------------------------------------------------------------

register(
    Location(
        name="pending_events",
        store="Redis",
        category="behavior events not yet stored (stream entries)",
        purpose="ingestion: events wait here for a few seconds until the drain stores them",
        retention="seconds (until drained)",
        mechanism="stream entries rewritten without the subject's events (XADD of the rest, XDEL)",
        columns=("event_id", "type", "timestamp", "user_id", "anonymous_id", "properties"),
        export=_units(subject_data.stream_events_read),
        erase=_count_erase(subject_data.stream_events_purge),
        verify=_units(subject_data.stream_events_count),
        redis_key="EVENTS_STREAM",
    )
)
register(
    table(
        name="events",
        model="personalization.Event",
        columns=("event_id", "type", "ts", "session_id", "value", "properties", "received_at"),
        category="behavior events: pages viewed, clicks, searches, purchases, identify and consent calls",
        purpose="personalization, behavior segments and measuring experiences",
        retention="the project's event retention (Privacy → Processing record & settings), then deleted hourly",
    )
)


def _exposure_segments_clear(subject: Subject, progress: Callable[[int], None]) -> int:
    """Objection and erasure: forget which segments the person was in when exposed (the exposures
    stay for measurement until erasure deletes them)."""
    cleared = _exposure_segments_rows(subject).update(behavior_segments=None)
    progress(cleared)
    return cleared


def _exposure_segments_rows(subject: Subject):
    exposures = apps.get_model("personalization.Exposure").objects.filter(profile_id__in=subject.profile_ids)
    return exposures.filter(behavior_segments__isnull=False)


register(
    replace(
        table(
            name="exposure_segments",
            model="personalization.Exposure",
            columns=("experience_key", "exposed_at", "behavior_segments"),
            category="the segments (behavior clusters, lookalikes, rules) the person was in when shown an experience",
            purpose="lift per behavior segment (profiling)",
            retention="as long as the exposure; cleared on objection",
            profiling=True,
        ),
        mechanism="UPDATE of the person's exposures setting behavior_segments to NULL",
        erase=_exposure_segments_clear,
        verify=lambda subject: _exposure_segments_rows(subject).count(),
        merge=None,  # the rows are the exposures', which "exposures" moves
    )
)
register(
    table(
        name="exposures",
        model="personalization.Exposure",
        columns=("experience_key", "variant_key", "arm", "reason", "segment", "exposed_at", "source", "converted"),
        category="experiences and variants shown, why (reason code), and their outcome",
        purpose="measuring experiences; bandit allocation",
        retention="as long as the profile",
        merge=_exposures_merge,
    )
)
register(
    table(
        name="dead_letters",
        model="personalization.DeadLetter",
        profile_field="",
        id_fields=("user_id", "anonymous_id"),
        columns=("event_id", "user_id", "anonymous_id", "payload", "error", "received_at"),
        category="events the drain could not store, with the error",
        purpose="letting an admin repair and retry events instead of losing them",
        retention="until an admin retries or deletes them",
    )
)
register(
    table(
        name="segment_memberships",
        model="segments.SegmentMembership",
        columns=("segment__key", "segment__name", "segment__kind", "score"),
        category="segments the person is in: behavior clusters, lookalike audiences, rule segments",
        purpose="targeting experiences and per-segment measurement (profiling)",
        retention="until the next clustering run, lookalike rebuild or rule refresh",
        profiling=True,
    )
)
register(
    table(
        name="embeddings",
        model="segments.ProfileEmbedding",
        columns=("embedder_version", "events", "updated_at", "vector"),
        category="behavior vector derived from the person's events",
        purpose="behavior segments and lookalike audiences (profiling)",
        retention="replaced at each refit; deleted with the profile",
        profiling=True,
    )
)
register(
    table(
        name="segment_map_points",
        model="segments.MapPoint",
        columns=("run_id", "x", "y", "index"),
        category="the person's dot on a clustering run's 2-D segment map (a sample of up to 3,000 people)",
        purpose="showing marketers how behavior segments lie (profiling)",
        retention="as long as the clustering run",
        profiling=True,
    )
)


def _publish_outbox_rows(subject: Subject):
    outbox = apps.get_model("segments.MembershipPublish").objects.filter(project_id=subject.project_id)
    return outbox.filter(profile_ids__overlap=list(subject.profile_ids))


def _publish_outbox_export(subject: Subject) -> Iterator[dict]:
    for row in _publish_outbox_rows(subject):
        yield {"pending_since": row.heartbeat_at.isoformat()}


def _publish_outbox_erase(subject: Subject, progress: Callable[[int], None]) -> int:
    """Take the person's profile ids out of pending publishes (the publish position moves with them)."""
    gone, removed = set(subject.profile_ids), 0
    with transaction.atomic():
        for row in _publish_outbox_rows(subject).select_for_update():
            row.done = sum(1 for pid in row.profile_ids[: row.done] if pid not in gone)
            row.profile_ids = [pid for pid in row.profile_ids if pid not in gone]
            row.save(update_fields=["profile_ids", "done"])
            removed += 1
    progress(removed)
    return removed


register(
    Location(
        name="segment_publish_outbox",
        store="PostgreSQL",
        category="the person's profile number in a pending publish of segment memberships to decide",
        purpose="finishing a publish a crashed worker left undone",
        retention="seconds: deleted once decide has the memberships",
        mechanism="the profile numbers removed from each pending publish",
        columns=("pending_since",),
        export=_publish_outbox_export,
        erase=_publish_outbox_erase,
        verify=lambda subject: _publish_outbox_rows(subject).count(),
        model="segments.MembershipPublish",
    )
)
register(
    table(
        name="identities",
        model="personalization.ProfileIdentity",
        columns=("kind", "value", "created_at"),
        category="identifiers: user id and anonymous (device) ids",
        purpose="recognising the same person across visits and devices",
        retention="as long as the profile",
        id_fields=("value",),
    )
)
register(
    table(
        name="profiles",
        model="personalization.Profile",
        profile_field="pk",
        id_fields=("external_id",),
        columns=("external_id", "attributes", "consent", "do_not_personalize", "first_seen", "last_seen"),
        category="profile: user id, attributes sent by the site, consent, first and last activity",
        purpose="personalization and targeting",
        retention="until erased; inactive profiles' events expire with the event retention",
        merge=_profile_merge,
    )
)
register(
    Location(
        name="decide_hash",
        store="Redis",
        category="decide data: attributes, do-not-personalize and consent flags, segments, sticky assignments",
        purpose="answering decide in one Redis round trip; showing a person the same variant",
        retention="180 days after last use (key expiry)",
        mechanism="DEL of every kr:<project>:u:<id> key",
        columns=("unit_id", "fields"),
        export=_units(subject_data.unit_hashes_read),
        erase=_count_erase(subject_data.unit_hashes_delete),
        verify=_units(subject_data.unit_hashes_count),
        redis_key="unit",
    )
)


def personal_models() -> set[str]:
    return {loc.model for loc in locations() if loc.model}


def personal_redis_keys() -> set[str]:
    return {loc.redis_key for loc in locations() if loc.redis_key}


def _export_files(subject: Subject) -> list:
    """Export ZIPs built for this subject's earlier access requests (they hold a copy of the data)."""
    from privacy.models import DataSubjectRequest

    profiles, units = set(subject.profile_ids), set(subject.unit_ids)
    found = []
    for request in DataSubjectRequest.objects.filter(project_id=subject.project_id).exclude(export_path=""):
        ids = request.subject or {}
        if profiles & set(ids.get("profile_ids", ())) or units & set(ids.get("unit_ids", ())):
            found.append(request)
    return found


def _export_files_read(subject: Subject) -> Iterator[dict]:
    for request in _export_files(subject):
        yield {"request": request.reference, "built_at": request.updated_at, "expires_at": request.export_expires_at}


def _export_files_erase(subject: Subject, progress: Callable[[int], None]) -> int:
    from pathlib import Path

    removed = 0
    for request in _export_files(subject):
        Path(request.export_path).unlink(missing_ok=True)
        request.export_path = ""
        request.save(update_fields=["export_path", "updated_at"])
        removed += 1
    progress(removed)
    return removed


register(
    Location(
        name="export_files",
        store="files",
        category="copies of the data made for the person's access requests",
        purpose="answering access and portability requests",
        retention="the export retention (KAIROS_EXPORT_KEEP_DAYS), then deleted",
        mechanism="file deleted and its link removed from the request",
        columns=("request", "built_at", "expires_at"),
        export=_export_files_read,
        erase=_export_files_erase,
        verify=lambda subject: len(_export_files(subject)),
    )
)
