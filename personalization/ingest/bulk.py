"""Bulk history load: a history known to be clean, written straight into the tables with COPY.

The ordinary way in for old events is the history import (ingest/history.py): every event validated,
sent through the stream and the drain, its profile resolved batch by batch, exposures' outcomes
worked out as conversions arrive. That is right for a file from outside and takes minutes per
million events. This loader is for a history that is already what the drain would have stored: one
generated (the demo shop), moved from another Kairos, or rebuilt from a warehouse by a script that
computed the outcomes itself. It writes half a million events in seconds, because it checks nothing
PostgreSQL does not (the claims tables hold the unique keys the partitioned tables cannot; the
events' trigger writes theirs): the caller answers for event ids unique in the project, identities not already
taken, and exposures whose outcomes (converted, conversions, revenue, pre_activity) follow the
drain's rules. A row PostgreSQL refuses (a duplicate, a NUL in a text) rolls the whole load back:
nothing is half written.

Rows are named tuples (plain tuples in the same field order do too); events and exposures name
their profile by its position in `profiles`.
The per-row foreign key checks are skipped where the database role may (they would be more than a
million trigger calls, about a third of the time): every row points at the project, checked and
locked once, or at a profile whose id this load reserved.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import orjson
from django.db import connection, transaction

from personalization.experiences.metric_values import metric_values_profiles_refresh
from personalization.models import IdentityKind
from personalization.people.profiles import references_lock, row_checks_skip

_TABLES = (
    "personalization_event",
    "personalization_eventclaim",
    "personalization_exposure",
    "personalization_exposureclaim",
    "personalization_profile",
    "personalization_profileidentity",
)


class HistoryProfile(NamedTuple):
    """A person. `first_seen` / `last_seen` left None are taken from the person's events; an
    anonymous id and an external (user) id each become an identity the drain will recognise."""

    anonymous_id: str | None
    external_id: str | None = None
    attributes: dict | None = None
    consent: dict | None = None
    do_not_personalize: bool = False
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class HistoryEvent(NamedTuple):
    """One stored event; `profile` is the position of its person in `profiles`. `received_at`
    defaults to `ts`."""

    profile: int
    event_id: str
    type: str
    ts: datetime
    session_id: str = ""
    value: float | None = None
    properties: dict | None = None
    received_at: datetime | None = None


class HistoryExposure(NamedTuple):
    """A person's first exposure to an experience with its outcomes, as the drain keeps it."""

    profile: int
    experience_key: str
    variant_key: str
    arm: str
    exposed_at: datetime
    reason: str = ""
    segment: str = ""
    source: str = "decide"
    goal: str = "purchase"
    window_hours: int = 72
    converted: bool = False
    conversions: int = 0
    revenue: float = 0.0
    pre_activity: int = 0
    # What decide knew of the live state at exposure ({"stage", "visitor", ...}, as facts_record
    # keeps it); None for an exposure from before live state was kept.
    live: dict | None = None


@dataclass(frozen=True)
class HistoryLoaded:
    """What a load wrote; `profile_ids[i]` is the id given to `profiles[i]`."""

    profile_ids: list[int]
    identities: int
    events: int
    exposures: int


def history_bulk_load(
    *,
    project_id: int,
    profiles: Sequence[HistoryProfile],
    events: Iterable[HistoryEvent],
    exposures: Iterable[HistoryExposure] = (),
) -> HistoryLoaded:
    """Write a clean history into an existing project in one transaction (a savepoint inside the caller's).

    `events` is read once, as it comes, before `exposures`: a generator keeps memory flat, and
    `exposures` may be a generator that yields what the caller worked out while the events streamed
    (the demo computes each exposure's outcomes from the person's visits that way).
    Raises ValueError naming the row when a row names no profile of `profiles` or a profile has
    neither events nor `first_seen`.
    """
    count = len(profiles)
    with transaction.atomic(), connection.cursor() as cursor:
        references_lock(cursor, project_id=project_id, profile_ids=[])
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('personalization_profile', 'id')) FROM generate_series(1, %s)",
            [count],
        )
        ids = [row[0] for row in cursor.fetchall()]
        skipped = row_checks_skip(cursor)
        first, last, written = _events_copy(cursor, project_id, ids, events)
        identities = _profiles_copy(cursor, project_id, ids, profiles, first, last)
        exposed = _exposures_copy(cursor, project_id, ids, exposures)
        if skipped:
            # The rest of the caller's transaction (a delete, say) gets its checks back. On an error
            # the savepoint's rollback undoes the SET LOCAL by itself.
            cursor.execute("SET LOCAL session_replication_role = origin")
        # Fresh statistics before anyone reads the load: planned with the empty tables' figures, a read
        # of the new rows (a segments fold-in, a rule segment) can take minutes instead of a second.
        # Inside the transaction ANALYZE counts its own rows; about a second for all four tables.
        for table in _TABLES:
            cursor.execute(f"ANALYZE {table}")
        # What the drain keeps on each exposure for the project's metrics, from the events just loaded
        # (a report reads them instead of the events once a metric's values are complete).
        metric_values_profiles_refresh(cursor, project_id=project_id, profile_ids=ids)
    return HistoryLoaded(profile_ids=ids, identities=identities, events=written, exposures=exposed)


def _position_message(kind: str, row: int, position: int, count: int) -> str:
    return f"{kind}[{row}].profile: {position} is not a position in profiles (0 to {count - 1})"


def _events_copy(cursor, project_id: int, ids: list[int], events: Iterable[HistoryEvent]):
    """COPY the events; returns each profile's first and last event time and the number written.

    The hot loop of a load (half a million rows for the demo): rows are unpacked, not read by name,
    and the profile's range checked inline, which keeps the loader's own cost per row near a third
    of a microsecond."""
    count = len(ids)
    first: list[datetime | None] = [None] * count
    last: list[datetime | None] = [None] * count
    written = 0
    dumps = orjson.dumps
    with cursor.cursor.copy(
        "COPY personalization_event"
        " (project_id, profile_id, event_id, type, ts, session_id, value, properties, received_at) FROM STDIN"
    ) as copy:
        write = copy.write_row
        for written, (position, event_id, etype, ts, session_id, value, properties, received_at) in enumerate(
            events, 1
        ):
            if not 0 <= position < count:
                raise ValueError(_position_message("events", written - 1, position, count))
            seen = first[position]
            if seen is None or ts < seen:
                first[position] = ts
            seen = last[position]
            if seen is None or ts > seen:
                last[position] = ts
            write(
                (
                    project_id,
                    ids[position],
                    event_id,
                    etype,
                    ts,
                    session_id,
                    value,
                    dumps(properties or {}).decode(),
                    received_at or ts,
                )
            )
    return first, last, written


def _profiles_copy(cursor, project_id: int, ids: list[int], profiles, first: list, last: list) -> int:
    """COPY the profiles, then their identities (dated from the profile's first sighting)."""
    seen = []
    for n, profile in enumerate(profiles):
        start = profile.first_seen or first[n]
        end = profile.last_seen or last[n]
        if start is None or end is None:
            raise ValueError(f"profiles[{n}].first_seen: the profile has no events to take it from; give both dates")
        seen.append((start, end))
    with cursor.cursor.copy(
        "COPY personalization_profile (id, project_id, external_id, attributes, consent, do_not_personalize,"
        " first_seen, last_seen) FROM STDIN"
    ) as copy:
        for n, profile in enumerate(profiles):
            copy.write_row(
                (
                    ids[n],
                    project_id,
                    profile.external_id,
                    orjson.dumps(profile.attributes or {}).decode(),
                    orjson.dumps(profile.consent or {}).decode(),
                    profile.do_not_personalize,
                    *seen[n],
                )
            )
    identities = 0
    anonymous, user = IdentityKind.ANONYMOUS.value, IdentityKind.USER.value
    with cursor.cursor.copy(
        "COPY personalization_profileidentity (project_id, profile_id, kind, value, created_at) FROM STDIN"
    ) as copy:
        for n, profile in enumerate(profiles):
            if profile.anonymous_id:
                copy.write_row((project_id, ids[n], anonymous, profile.anonymous_id, seen[n][0]))
                identities += 1
            if profile.external_id:
                copy.write_row((project_id, ids[n], user, profile.external_id, seen[n][0]))
                identities += 1
    return identities


def _exposures_copy(cursor, project_id: int, ids: list[int], exposures: Iterable[HistoryExposure]) -> int:
    """COPY the exposures, then their claims (ExposureClaim: one per person and experience)."""
    written = 0
    claims: list[tuple[int, str]] = []
    with cursor.cursor.copy(
        "COPY personalization_exposure (project_id, profile_id, experience_key, variant_key, arm, reason,"
        " segment, exposed_at, source, goal, window_hours, converted, conversions, revenue, pre_activity, live)"
        " FROM STDIN"
    ) as copy:
        for written, row in enumerate(exposures, 1):
            if not 0 <= row.profile < len(ids):
                raise ValueError(_position_message("exposures", written - 1, row.profile, len(ids)))
            copy.write_row(
                (
                    project_id,
                    ids[row.profile],
                    row.experience_key,
                    row.variant_key,
                    row.arm,
                    row.reason,
                    row.segment,
                    row.exposed_at,
                    row.source,
                    row.goal,
                    row.window_hours,
                    row.converted,
                    row.conversions,
                    row.revenue,
                    row.pre_activity,
                    None if row.live is None else orjson.dumps(row.live).decode(),
                )
            )
            claims.append((ids[row.profile], row.experience_key))
    with cursor.cursor.copy(
        "COPY personalization_exposureclaim (project_id, profile_id, experience_key) FROM STDIN"
    ) as copy:
        for profile_id, key in claims:
            copy.write_row((project_id, profile_id, key))
    return written
