"""The registry of personal data locations: every table, Redis key and file holding data about a
person, with how to export it, erase it, merge it (when an anonymous profile turns out to be a known
user) and verify it is gone.

The mechanism lives here, in the lowest app, so that every app registers the locations of ITS OWN
tables and keys from its `AppConfig.ready()` (personalization: personalization/people/personal_locations.py,
segments: segments/personal_data.py, privacy: privacy/registry.py). Export, erasure, objection,
profile merge, verification and the Art. 30 record (all in privacy) walk `locations()` and nothing else.
tests/privacy/test_registry.py fails when a model pointing at a profile, or a Redis key marked
PERSONAL in personalization/rkeys.py, has no location.

Order is explicit, not the order apps load in: `locations()` is sorted by each location's `order`.
Erasure walks that order, so the stream comes first (no pending event re-creates what was just
deleted), rows pointing at a profile come before the identities and the profile, and a merge moves
every other location's rows before the source profile goes.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.core.exceptions import EmptyResultSet
from django.db import connection, models, transaction
from django.db.models import Q

ERASE_CHUNK = 20_000  # rows per erasure transaction (privacy_run --chunk sets it)
EXPORT_CHUNK = 2_000

# The erasure order's landmarks; a location picks the one it belongs to (plus a small offset when
# two of one kind must go in a given order, as exposure segments before exposures).
ORDER_STREAM = 100  # entries not stored yet: first, so the drain cannot re-create erased rows
ORDER_ROWS = 200  # rows pointing at a profile or holding a person's ids
ORDER_IDENTITIES = 800  # the ids a profile is found by
ORDER_PROFILE = 900  # the profile itself: after everything pointing at it
ORDER_AFTER_PROFILE = 1000  # stores no row points at (decide's Redis hash, export files)


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
    store: str  # "PostgreSQL", "Redis" or "files"
    category: str  # category of personal data (Art. 30 (1)(c))
    purpose: str
    retention: str
    mechanism: str  # how erase() removes it, as the certificate says
    columns: tuple[str, ...]  # the export's CSV columns, in order
    export: Callable[[Subject], Iterator[dict]]
    erase: Callable[[Subject, Callable[[int], None]], int]  # (subject, progress(n)) -> rows removed
    verify: Callable[[Subject], int]  # rows or keys still there (0 once erased)
    order: int  # erasure and merge walk locations by it (ORDER_* above)
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
        raise ValueError(f"personal data registry: {location.name!r} is registered twice")
    _LOCATIONS[location.name] = location
    return location


def locations() -> list[Location]:
    """Every location, in erasure order (then by name, so the order never depends on app loading)."""
    return sorted(_LOCATIONS.values(), key=lambda loc: (loc.order, loc.name))


def location(name: str) -> Location:
    return _LOCATIONS[name]


def personal_models() -> set[str]:
    return {loc.model for loc in locations() if loc.model}


def personal_redis_keys() -> set[str]:
    return {loc.redis_key for loc in locations() if loc.redis_key}


def subject_merge(*, source: int, target: int) -> None:
    """Fold profile `source` into `target`: every location moves its rows by its own merge rule, in
    order, so the profile (ORDER_PROFILE) goes after everything pointing at it."""
    for loc in locations():
        if loc.merge is not None:
            loc.merge(source, target)


def units(fn: Callable[..., object]) -> Callable[[Subject], object]:
    """A handler taking (project_id=, unit_ids=) as one taking a Subject (for Redis locations)."""
    return lambda subject: fn(project_id=subject.project_id, unit_ids=list(subject.unit_ids))


def count_erase(delete: Callable[..., int]) -> Callable[[Subject, Callable[[int], None]], int]:
    """A delete taking (project_id=, unit_ids=) and returning a count, as an erase handler."""

    def erase(subject: Subject, progress: Callable[[int], None]) -> int:
        removed = delete(project_id=subject.project_id, unit_ids=list(subject.unit_ids))
        progress(removed)
        return removed

    return erase


def table(
    *,
    name: str,
    model: type[models.Model],
    order: int = ORDER_ROWS,
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
        query = Q(pk__in=[])
        if profile_field:
            field = "pk" if profile_field == "pk" else f"{profile_field}_id"
            query |= Q(**{f"{field}__in": subject.profile_ids})
        for id_field in id_fields:
            query |= Q(project_id=subject.project_id, **{f"{id_field}__in": subject.unit_ids})
        return model.objects.filter(query)

    def export(subject: Subject) -> Iterator[dict]:
        for row in rows(subject).order_by("pk").values_list(*columns).iterator(chunk_size=EXPORT_CHUNK):
            yield dict(zip(columns, row, strict=True))

    def sql(subject: Subject) -> str:
        try:
            query, params = rows(subject).order_by("pk").values(*columns).query.sql_with_params()
        except EmptyResultSet:  # nothing to find the subject by: a query of no rows, same columns
            none = model.objects.filter(pk__isnull=True).values(*columns)
            query, params = none.query.sql_with_params()
        return connection.ops.compose_sql(query, params)

    def erase(subject: Subject, progress: Callable[[int], None]) -> int:
        removed = 0
        # One transaction per chunk: a job killed midway keeps what it deleted and starts again
        # from what is left, and no lock is held over a whole subject's history.
        while True:
            with transaction.atomic():
                chunk = rows(subject).values("pk")[:ERASE_CHUNK]  # a subquery: no ids held in Python
                deleted = model.objects.filter(pk__in=chunk).delete()[1].get(model._meta.label, 0)
            removed += deleted
            progress(deleted)
            if deleted < ERASE_CHUNK:
                return removed

    def move(source: int, target: int) -> None:
        model.objects.filter(**{f"{profile_field}_id": source}).update(**{f"{profile_field}_id": target})

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
        order=order,
        profiling=profiling,
        model=model._meta.label,
    )
