"""Monthly partitions of the events and exposures tables, and the retention that drops them.

Both tables are partitioned by RANGE on their time column (migration 0013): events on `ts`, the time
the event happened, exposures on `exposed_at`. `ts` rather than `received_at`, although
`received_at` would make every write land in the newest partition: every read names `ts` (a
conversion window, a chart's range, the 14 days before an exposure, retention's "older than"), so
only `ts` lets PostgreSQL prune partitions, and retention is defined on it. Late and imported events
then land in older partitions, which is what retention should see.

Each table has one partition per UTC month, named `<table>_pYYYY_MM`, and a DEFAULT partition for
rows outside them (a clock years off, a history older than the migration). `partitions_ensure`
(Celery beat, daily) creates the coming months ahead of time; a month whose rows already sit in the
DEFAULT partition is split out of it (rows moved, then attached), so ensuring is idempotent and
never fails on what the DEFAULT holds.

Retention (`events_retention_apply`) drops a whole month when every project that has rows in it
keeps events for less than the month's age: a catalog change, milliseconds whatever the month holds.
What remains past a project's cut-off (the newest expired month, projects that keep longer sharing a
month with ones that keep less) is deleted row by row, as before, and so are the claims of the
events deleted (`event_claims_expire`: the claims table holds the unique key across months, so it
cannot be partitioned by month). A month is dropped under a short
lock_timeout: when a long read holds the table, the month waits for the next run rather than making
every drain wait behind the drop.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from personalization.people.subjects import events_delete_before, rows_delete_chunked

# table -> its partition key. The claims tables (EventClaim, ExposureClaim) are not partitioned.
PARTITIONED = {"personalization_event": "ts", "personalization_exposure": "exposed_at"}
EVENTS = "personalization_event"
EVENT_CLAIMS = "personalization_eventclaim"
# Months created ahead of the current one: the daily task can miss two months of runs before a
# month's rows fall into the DEFAULT partition (and even then they are split out at the next run).
MONTHS_AHEAD = 3
_LOCK = 0x6B61_7070  # pg_advisory_xact_lock key: one maintainer at a time
_CLAIMS_CHUNK = 50_000


@dataclass(frozen=True)
class Month:
    """One monthly partition: rows with lower <= key < upper."""

    name: str
    lower: datetime
    upper: datetime


@dataclass
class RetentionDone:
    """What a retention run did: months dropped, and rows deleted per project (dropped or one by one)."""

    dropped: list[str] = field(default_factory=list)
    deleted: dict[int, int] = field(default_factory=dict)


def month_floor(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def month_add(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def default_name(table: str) -> str:
    return f"{table}_default"


def partitions_list(*, table: str) -> list[Month]:
    """The table's monthly partitions, oldest first (the DEFAULT partition is not one)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass AND c.relname LIKE %s ORDER BY c.relname",
            [table, f"{table}\\_p%"],
        )
        names = [name for (name,) in cursor.fetchall()]
    months = []
    for name in names:
        year, month = name.removeprefix(f"{table}_p").split("_")
        lower = datetime(int(year), int(month), 1, tzinfo=UTC)
        months.append(Month(name=name, lower=lower, upper=month_add(lower, 1)))
    return months


def partition_month_create(cursor, *, table: str, month: datetime) -> bool:
    """Create `table`'s partition for `month` unless it exists; rows of that month waiting in the
    DEFAULT partition move into it first (PostgreSQL refuses a new partition whose range the DEFAULT
    partition holds rows of). Returns whether it was created. Runs in the caller's transaction."""
    name = partition_name(table, month)
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    if cursor.fetchone()[0]:
        return False
    column = PARTITIONED[table]
    lower, upper = month, month_add(month, 1)
    # LIKE copies columns, NOT NULL and CHECK constraints (ATTACH wants them); the partitioned
    # indexes, primary key and foreign keys come with ATTACH.
    cursor.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {default_name(table)} WHERE {column} >= %s AND {column} < %s RETURNING *)"
        f" INSERT INTO {name} SELECT * FROM moved",
        [lower, upper],
    )
    cursor.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [lower, upper])
    return True


def partitions_ensure(*, now: datetime | None = None, ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create both tables' partitions from this month to `ahead` months on, and of every month the
    DEFAULT partition holds rows of; returns the partitions created (none on a second run)."""
    current = month_floor(now or timezone.now())
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        for table, column in PARTITIONED.items():
            cursor.execute(
                f"SELECT DISTINCT date_trunc('month', {column} AT TIME ZONE 'UTC') FROM {default_name(table)}"
            )
            stray = {found.replace(tzinfo=UTC) for (found,) in cursor.fetchall()}
            wanted = {month_add(current, n) for n in range(ahead + 1)} | stray
            for month in sorted(wanted):
                if partition_month_create(cursor, table=table, month=month):
                    created.append(partition_name(table, month))
    return created


def events_retention_apply(*, cutoffs: dict[int, datetime], lock_timeout_ms: int = 5_000) -> RetentionDone:
    """Delete every project's events older than its cut-off (`cutoffs`: project -> cut-off; a project
    not in it keeps its events): whole months dropped where no project still keeps rows of them, the
    rest row by row. The claims of what went are event_claims_expire's."""
    done = RetentionDone()
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM personalization_project")
        projects = [project_id for (project_id,) in cursor.fetchall()]
    for month in partitions_list(table=EVENTS):
        keepers = [p for p in projects if p not in cutoffs or cutoffs[p] < month.upper]
        if len(keepers) == len(projects):
            break  # months are in order: no later month can be dropped either
        if _month_drop(month, keepers, done, lock_timeout_ms) is False:
            break
    for project_id, cutoff in sorted(cutoffs.items()):
        rows = events_delete_before(project_id=project_id, before=cutoff)
        done.deleted[project_id] = done.deleted.get(project_id, 0) + rows
    return done


def event_claims_expire(*, cutoffs: dict[int, datetime]) -> int:
    """The claims of events retention deleted (older than their project's cut-off), in committed
    chunks; returns how many. Row by row, unlike the months: the claims table is not partitioned
    (it holds the unique key across months), so this is the part of retention that takes time
    (bench/partitions.py). The events are gone, so an id sent again is a new event (and past
    retention itself, gone again at the next run)."""
    deleted = 0
    for project_id, cutoff in sorted(cutoffs.items()):
        deleted += rows_delete_chunked(
            sql=f"DELETE FROM {EVENT_CLAIMS} WHERE (project_id, event_id) IN"
            f" (SELECT project_id, event_id FROM {EVENT_CLAIMS} WHERE project_id = %s AND ts < %s LIMIT %s)",
            params=[project_id, cutoff, _CLAIMS_CHUNK],
            chunk=_CLAIMS_CHUNK,
        )
    return deleted


def _month_drop(month: Month, keepers: list[int], done: RetentionDone, lock_timeout_ms: int) -> bool | None:
    """Drop `month` unless one of `keepers` has rows in it (None: kept). False when the table was
    too busy to drop it now."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {month.name} WHERE project_id = ANY(%s::bigint[]))", [keepers])
        if cursor.fetchone()[0]:
            return None
        cursor.execute(f"SELECT project_id, count(*) FROM {month.name} GROUP BY project_id")
        counts = dict(cursor.fetchall())
        cursor.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        try:
            with transaction.atomic():
                cursor.execute(f"DROP TABLE {month.name}")
        except OperationalError as error:  # lock_not_available: try again at the next run
            if getattr(error.__cause__, "sqlstate", "") != "55P03":
                raise
            return False
    for project_id, rows in counts.items():
        done.deleted[project_id] = done.deleted.get(project_id, 0) + rows
    done.dropped.append(month.name)
    return True
