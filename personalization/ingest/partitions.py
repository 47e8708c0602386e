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

Retention (`events_retention_apply`, `exposures_retention_apply`: one project setting, one horizon
for both, since an exposure is personal data measured against the events of the same time) drops a
whole month when every project that has rows in it keeps them for less than the month's age: a
catalog change, milliseconds whatever the month holds. The claims of the month's rows go in the same
transaction, by one DELETE joined with the month before it is dropped (the claims tables hold the
unique keys across months, so they cannot be partitioned by month). What remains past a project's
cut-off (the newest expired month, projects that keep longer sharing a month with ones that keep
less) is deleted in chunks, each chunk's rows and claims in one statement. A month is dropped under
a short lock_timeout: when a long read holds the table, the month waits for the next run rather than
making every drain wait behind the drop.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from personalization.people.subjects import rows_delete_chunked

# table -> its partition key. The claims tables (EventClaim, ExposureClaim) are not partitioned.
PARTITIONED = {"personalization_event": "ts", "personalization_exposure": "exposed_at"}
EVENTS, EXPOSURES = "personalization_event", "personalization_exposure"
# table -> its claims table, the key a row and its claim share, and the claim's copy of the row's
# time if it has one. Retention deletes a row's claim in the statement (a month: the transaction) that
# deletes the row: a claim left behind would refuse a row that is not stored, a row left without its
# claim would let a second one in.
CLAIMS = {
    EVENTS: ("personalization_eventclaim", ("project_id", "event_id"), "ts"),
    EXPOSURES: ("personalization_exposureclaim", ("project_id", "profile_id", "experience_key"), None),
}
# Months created ahead of the current one: the daily task can miss two months of runs before a
# month's rows fall into the DEFAULT partition (and even then they are split out at the next run).
MONTHS_AHEAD = 3
_LOCK = 0x6B61_7070  # pg_advisory_xact_lock key: one maintainer at a time
_ROWS_CHUNK = 20_000


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
    not in it keeps its events), with their claims: whole months dropped where no project still
    keeps rows of them, the rest row by row."""
    return _retention_apply(EVENTS, cutoffs, lock_timeout_ms)


def exposures_retention_apply(*, cutoffs: dict[int, datetime], lock_timeout_ms: int = 5_000) -> RetentionDone:
    """As events_retention_apply, for the exposures (by `exposed_at`) and their claims: an exposure
    is personal data kept under the same promise as the events it is measured with."""
    return _retention_apply(EXPOSURES, cutoffs, lock_timeout_ms)


def _retention_apply(table: str, cutoffs: dict[int, datetime], lock_timeout_ms: int) -> RetentionDone:
    done = RetentionDone()
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM personalization_project")
        projects = [project_id for (project_id,) in cursor.fetchall()]
    for month in partitions_list(table=table):
        keepers = [p for p in projects if p not in cutoffs or cutoffs[p] < month.upper]
        if len(keepers) == len(projects):
            break  # months are in order: no later month can be dropped either
        if _month_drop(table, month, keepers, done, lock_timeout_ms) is False:
            break
    for project_id, cutoff in sorted(cutoffs.items()):
        rows = _rows_delete_before(table, project_id=project_id, before=cutoff)
        done.deleted[project_id] = done.deleted.get(project_id, 0) + rows
    return done


def _rows_delete_before(table: str, *, project_id: int, before: datetime) -> int:
    """A project's rows older than `before` and their claims, in committed chunks: each chunk's rows
    and claims go in one statement, so a stop between chunks leaves no row without its claim."""
    claims, key, _ = CLAIMS[table]
    column = PARTITIONED[table]
    same = " AND ".join(f"c.{name} = gone.{name}" for name in key)
    # The time column twice: both halves read only the months before the cut-off.
    return rows_delete_chunked(
        sql=f"WITH gone AS (DELETE FROM {table} WHERE {column} < %s AND (id, {column}) IN"
        f" (SELECT id, {column} FROM {table} WHERE project_id = %s AND {column} < %s LIMIT %s)"
        f" RETURNING {', '.join(key)}),"
        f" claims AS (DELETE FROM {claims} c USING gone WHERE {same})"
        " SELECT count(*) FROM gone",
        params=[before, project_id, before, _ROWS_CHUNK],
        chunk=_ROWS_CHUNK,
    )


def _month_drop(table: str, month: Month, keepers: list[int], done: RetentionDone, lock_timeout_ms: int) -> bool | None:
    """Drop `month` and its rows' claims unless one of `keepers` has rows in it (None: kept). False
    when the table was too busy to drop it now."""
    claims, key, claimed_at = CLAIMS[table]
    same = " AND ".join(f"c.{name} = m.{name}" for name in key)
    params = []
    if claimed_at:
        # Only the month's claims (by the claims' BRIN index) are joined with it: 4 to 5 times less
        # work than probing or hashing the whole claims table (bench/partitions.py). The join, not the
        # range alone, decides which claims go.
        same += f" AND c.{claimed_at} >= %s AND c.{claimed_at} < %s"
        params = [month.lower, month.upper]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        cursor.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        try:
            with transaction.atomic():
                # SHARE first: no row enters or leaves the month from here to its drop (reads go on), so
                # the claims deleted are exactly those of the rows dropped, in one statement joined on
                # the claims' key; an id claimed meanwhile by another month waits for this commit.
                cursor.execute(f"LOCK TABLE {month.name} IN SHARE MODE")
                cursor.execute(
                    f"SELECT EXISTS (SELECT 1 FROM {month.name} WHERE project_id = ANY(%s::bigint[]))", [keepers]
                )
                if cursor.fetchone()[0]:
                    return None
                cursor.execute(f"SELECT project_id, count(*) FROM {month.name} GROUP BY project_id")
                counts = dict(cursor.fetchall())
                cursor.execute(f"DELETE FROM {claims} c USING {month.name} m WHERE {same}", params)
                cursor.execute(f"DROP TABLE {month.name}")
        except OperationalError as error:
            # lock_not_available, or deadlock_detected (a writer into this old month meanwhile, which
            # waited on the SHARE lock while the drop waited on its table): try again at the next run.
            if getattr(error.__cause__, "sqlstate", "") not in ("55P03", "40P01"):
                raise
            return False
    for project_id, rows in counts.items():
        done.deleted[project_id] = done.deleted.get(project_id, 0) + rows
    done.dropped.append(month.name)
    return True
