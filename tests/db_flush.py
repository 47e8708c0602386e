"""A transactional test's flush that costs what the test wrote, not what the schema holds.

After each transactional test (django_db(transaction=True), live_server, transactional_db) Django empties
the test database with one `TRUNCATE` of every table: ~48 tables with their partitions and ~190 indexes,
each given a new file, whether the test wrote one row or none. That is a third of a second of
PostgreSQL per test and ~100 transactional tests in the suite. Here the flush first asks, in one query,
which tables hold rows (a count bounded at `MANY`), then empties only those, in the one transaction
Django runs the flush in:
- with `DELETE`: Django creates its foreign keys DEFERRABLE INITIALLY DEFERRED, so the order does not
  matter and the checks at commit find every referencing row gone;
- with `TRUNCATE … CASCADE` for a table holding `MANY` rows or more (a seeded demo's tens of thousands
  of events), cheaper than deleting them one by one; CASCADE also empties the tables that point at it,
  which an empty database needs anyway. The truncates go first: PostgreSQL refuses to truncate a table
  that has deferred checks pending from an earlier DELETE in the same transaction.

Content types and permissions are left in place: after a full flush Django's post_migrate handlers
write the very same rows again (with new ids), and nothing in this project creates others.
A flush that asks to reset sequences or to cascade (available_apps) is Django's own, unchanged.

Refit staging tables (segments' vector_io) that a worker the test killed mid-refit left are dropped too:
they are tables, not rows, and a later test whose project got the same id took them for its own.

Before it, the sessions of the test's own subprocesses still open are ended (`orphans_end`): a worker,
drain or job the test SIGKILLed leaves its query running in PostgreSQL until the server next talks to
it, holding its locks; the flush waited on them (17-31 s), and so did the next test of the process that
touched those tables (an erasure test waited 120 s and failed).
"""

from django.db.backends.postgresql.operations import DatabaseOperations

MANY = 1000
# Filled by migrate's post_migrate handlers, which a flush runs again: left as they are.
KEPT = frozenset({"django_content_type", "auth_permission"})

_django_sql_flush = DatabaseOperations.sql_flush


def tables_with_rows(connection, tables) -> dict[str, int]:
    """{table: rows, counted up to MANY} for the tables that hold any, in one query."""
    if not tables:
        return {}
    counts = ", ".join(
        f"(SELECT count(*) FROM (SELECT 1 FROM {connection.ops.quote_name(table)} LIMIT {MANY}) AS t)"
        for table in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT ARRAY[{counts}]")
        (rows,) = cursor.fetchone()
    return {table: n for table, n in zip(tables, rows, strict=True) if n}


# libpq's application_name of every process a test starts on the test database (tests/workers.py sets
# PGAPPNAME): they live no longer than their test, so a session of theirs left after it is an orphan.
TEST_PROCESS_PREFIX = "kairos-test-"


def orphans_end(connection) -> int:
    """End the test database's sessions of processes the test started (their transactions roll back)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE %s",
            [TEST_PROCESS_PREFIX + "%"],
        )
        return cursor.fetchone()[0]


def staging_tables(connection) -> list[str]:
    """Tables a refit stages its vectors in (segments' vector_io): a worker the test killed mid-refit
    leaves them, committed, and a later test whose project got the same id found them as its own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'segments\\_refit\\_p%'")
        return [name for (name,) in cursor.fetchall()]


def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
    orphans_end(self.connection)
    if reset_sequences or allow_cascade:
        return _django_sql_flush(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    held = tables_with_rows(self.connection, sorted(set(tables) - KEPT))
    many = [table for table, n in held.items() if n >= MANY]
    few = [table for table, n in held.items() if n < MANY]
    sql = [f"DROP TABLE IF EXISTS {self.quote_name(table)};" for table in staging_tables(self.connection)]
    if many:
        sql.append(f"TRUNCATE {', '.join(map(self.quote_name, many))} CASCADE;")
    sql.extend(f"DELETE FROM {self.quote_name(table)};" for table in few)
    return sql  # empty when the test left nothing: Django then skips the flush and post_migrate


def install() -> None:
    DatabaseOperations.sql_flush = sql_flush
