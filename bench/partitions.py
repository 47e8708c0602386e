"""Monthly partitions against the plain tables, in one run: the lift report, the drain's write, retention.

    python bench/partitions.py [--quick]

Builds its own database (kairos_bench_partitions, made afresh each run): the migrated, partitioned
events and exposures tables, and in a schema `flat` the same tables as they were before migration
0013 (plain, with the unique keys (project, event_id) and (project, experience, profile)), holding
the same rows. Each layout is read and written by the same code, Kairos' own where it can be: the
search_path picks the layout ("flat, public" or "public"), so the lift report is
experiments.services.lift_compute itself, over the lift bench's data (bench/lift.py's builders:
200,000 exposures and 800,000 events around them; --quick: 50,000 and 200,000).

  (a) lift: the single-metric report by the segment column and the five-metric report by a profile
      attribute, layouts alternated, median of the runs.
  (b) the drain's write of new events, batches of 5,000 (a drain step) in a transaction each,
      layouts alternated, foreign key checks skipped as the drain skips them: the drain's own
      _events_insert (binary COPY) in both, the claims written by the partitioned table's trigger,
      the plain table under its unique (project, event_id) as before 0013.
  (c) retention of a year of data (12 months × 100,000 events; --quick 25,000): the partitioned
      layout by services.events_retention_apply (months dropped, each with its events' claims, deleted
      by one statement joined with the month before the drop), the plain table by the chunked DELETE
      retention did before 0013; then a year of exposures as many (one person, each exposure to an
      experience of its own, so each has its claim) by services.exposures_retention_apply. Wall and CPU
      seconds (this process and its PostgreSQL backend) for each.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common
from bench import lift as lift_bench  # its builders; imports no Django at module level

DATABASE = "kairos_bench_partitions"
BATCH = 5_000
TABLES = ("personalization_event", "personalization_exposure")


def database_fresh(database_url: str) -> None:
    import psycopg

    with psycopg.connect(_common.with_path(database_url, "/postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def layout(cursor, name: str) -> None:
    cursor.execute("SET search_path TO flat, public" if name == "flat" else "SET search_path TO public")


def flat_copy(cursor) -> None:
    """The plain tables of before 0013 in schema `flat`, holding the partitioned tables' rows."""
    cursor.execute("CREATE SCHEMA flat")
    for table in TABLES:
        cursor.execute(
            f"CREATE TABLE flat.{table}"
            f" (LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)"
        )
        cursor.execute(f"INSERT INTO flat.{table} SELECT * FROM public.{table}")
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('flat.{table}', 'id'), 1_000_000_000)")
    cursor.execute(
        "ALTER TABLE flat.personalization_event ADD PRIMARY KEY (id),"
        " ADD CONSTRAINT flat_event_unique UNIQUE (project_id, event_id)"
    )
    cursor.execute("CREATE INDEX ON flat.personalization_event (profile_id, ts)")
    cursor.execute("CREATE INDEX ON flat.personalization_event (project_id, type, ts)")
    cursor.execute("CREATE INDEX ON flat.personalization_event USING brin (ts)")
    cursor.execute(
        "ALTER TABLE flat.personalization_exposure ADD PRIMARY KEY (id),"
        " ADD CONSTRAINT flat_exposure_unique UNIQUE (project_id, experience_key, profile_id)"
    )
    cursor.execute("CREATE INDEX ON flat.personalization_exposure (project_id, experience_key, exposed_at)")
    cursor.execute("CREATE INDEX ON flat.personalization_exposure (profile_id)")
    cursor.execute(
        "CREATE STATISTICS flat.exposure_day_stats ON (floor(date_part('epoch', exposed_at) / 86400))"
        " FROM flat.personalization_exposure"
    )
    for table in TABLES:
        cursor.execute(f"VACUUM ANALYZE flat.{table}")
        cursor.execute(f"VACUUM ANALYZE public.{table}")


def lift_build(project, n: int) -> None:
    from django.db import connection, transaction

    from personalization import services

    run = lift_bench.behavior_run(project)
    with transaction.atomic():
        lift_bench.build(project, n, run.key_prefix)
        lift_bench.events_build(project)
    services.partitions_ensure()  # last month's rows out of the DEFAULT partition, as the daily task does
    with connection.cursor() as cursor:
        # (the events' claims were written by their insert's trigger)
        cursor.execute(
            "INSERT INTO personalization_exposureclaim (project_id, profile_id, experience_key)"
            " SELECT project_id, profile_id, experience_key FROM personalization_exposure WHERE project_id = %s",
            [project.pk],
        )


def lift_measure(project, runs: int) -> dict:
    from django.db import connection

    from experiments import services
    from experiments.breakdown import Breakdown

    end = datetime.now(UTC) + timedelta(minutes=1)
    start = end - timedelta(days=14)

    def report(segment_by: str) -> float:
        began = time.perf_counter()
        services.lift_compute(
            project=project,
            experience_key=lift_bench.EXPERIENCE,
            breakdown=Breakdown.parse(segment_by),
            start=start,
            end=end,
        )
        return time.perf_counter() - began

    times: dict[str, list[float]] = {}
    for five, segment_by in ((False, "exposure:segment"), (True, "attribute:seg")):
        lift_bench.metrics_choose(project, five=five)
        kind = "metrics5" if five else "single"
        with connection.cursor() as cursor:
            for name in ("flat", "partitioned"):  # warm both alike
                layout(cursor, name)
                report(segment_by)
            for _ in range(runs):
                for name in ("flat", "partitioned"):
                    layout(cursor, name)
                    times.setdefault(f"{kind}_{name}", []).append(report(segment_by))
            layout(cursor, "partitioned")
    return {key: statistics.median(values) for key, values in times.items()}


def drain_measure(project, events: int) -> dict:
    """Events per second written by the drain's insert step, new events in batches of BATCH."""
    from django.db import connection, transaction

    from personalization.ingest import drain
    from personalization.people.profiles import row_checks_skip

    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM personalization_profile WHERE project_id = %s LIMIT 10000", [project.pk])
        profiles = [pid for (pid,) in cursor.fetchall()]
    now = datetime.now(UTC)
    batches = []
    for b in range(events // BATCH):
        batch = []
        for i in range(BATCH):
            n = b * BATCH + i
            batch.append(
                {
                    "event_id": f"d-{uuid.uuid4().hex[:20]}",
                    "type": "purchase" if n % 30 == 0 else "page_view",
                    "ts": (now - timedelta(minutes=(n * 7) % (20 * 24 * 60))).isoformat(),  # 20 days: two months
                    "session_id": f"s{n % 997}",
                    "value": "42.50" if n % 30 == 0 else None,
                    "properties": {"url": f"/p/{n % 500}", "ref": "bench"},
                    "received_at": now.isoformat(),
                }
            )
        batches.append(batch)
    spent = {"flat": 0.0, "partitioned": 0.0}
    with connection.cursor() as cursor:
        for number, batch in enumerate(batches):
            for name in ("flat", "partitioned") if number % 2 else ("partitioned", "flat"):
                layout(cursor, name)
                rows = [{**event, "event_id": f"{event['event_id']}-{name}"} for event in batch]
                profile_of = {event["event_id"]: profiles[k % len(profiles)] for k, event in enumerate(rows)}
                began = time.perf_counter()
                with transaction.atomic():
                    row_checks_skip(cursor)  # as the drain does, in both layouts
                    # The drain's own write in both: its binary COPY, into the monthly partitions (claims
                    # by their trigger) or into the plain table under its unique (project, event_id).
                    drain._events_insert(cursor, project.pk, rows, profile_of)
                spent[name] += time.perf_counter() - began
        layout(cursor, "partitioned")
    total = len(batches) * BATCH
    return {name: total / seconds for name, seconds in spent.items()} | {"events": total}


def retention_build(per_month: int) -> tuple[int, datetime]:
    """A project with a year of events, 13 to 24 months old; returns it and its cut-off (a year)."""
    from django.db import connection, transaction

    from personalization.ingest.partitions import month_add, month_floor, partition_month_create
    from personalization.models import Profile, Project

    project = Project.objects.create(slug="retention-bench", name="Retention bench")
    now = datetime.now(UTC)
    profile = Profile.objects.create(project=project, first_seen=now, last_seen=now)
    first = month_add(month_floor(now), -24)
    with transaction.atomic(), connection.cursor() as cursor:
        for m in range(12):
            month = month_add(first, m)
            partition_month_create(cursor, table="personalization_event", month=month)
            partition_month_create(cursor, table="personalization_exposure", month=month)
            cursor.execute(
                "INSERT INTO personalization_exposure (project_id, profile_id, experience_key, variant_key, arm,"
                " reason, segment, exposed_at, source, goal, window_hours, converted, conversions, revenue,"
                " pre_activity) SELECT %s, %s, 'x-' || %s || '-' || g, 'a', 'variant', '', '', %s + g * (interval"
                " '27 days' / %s), 'decide', 'purchase', 72, false, 0, 0, 0 FROM generate_series(1, %s) g",
                [project.pk, profile.pk, m, month, per_month, per_month],
            )
            cursor.execute(
                "INSERT INTO personalization_event"
                " (project_id, profile_id, event_id, type, ts, session_id, value, properties, received_at)"
                " SELECT %s, %s, 'r-' || %s || '-' || g, 'page_view', %s + g * (interval '27 days' / %s), '', NULL,"
                ' \'{"url": "/"}\', now() FROM generate_series(1, %s) g',
                [project.pk, profile.pk, m, month, per_month, per_month],
            )
        cursor.execute(
            "INSERT INTO flat.personalization_event SELECT * FROM public.personalization_event WHERE project_id = %s",
            [project.pk],
        )
        cursor.execute(
            "INSERT INTO personalization_exposureclaim (project_id, profile_id, experience_key)"
            " SELECT project_id, profile_id, experience_key FROM personalization_exposure WHERE project_id = %s",
            [project.pk],
        )
    with connection.cursor() as cursor:
        for table in (
            "public.personalization_event",
            "flat.personalization_event",
            "personalization_eventclaim",
            "personalization_exposure",
            "personalization_exposureclaim",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return project.pk, month_add(first, 12)


def retention_measure(project_id: int, cutoff: datetime) -> dict:
    """Seconds and CPU seconds (this process + its PostgreSQL backend) of each step: the plain table's
    chunked DELETE, then the partitioned layout's retention (months dropped, their claims with them),
    then the exposures' retention."""
    from django.db import connection

    from personalization import services

    def timed(step) -> tuple[object, float, float]:
        backend, process, began = _common.backend_cpu_seconds(), time.process_time(), time.perf_counter()
        result = step()
        seconds = time.perf_counter() - began
        backend_after = _common.backend_cpu_seconds()
        cpu = time.process_time() - process + (0.0 if backend is None else backend_after - backend)
        return result, seconds, cpu

    with connection.cursor() as cursor:
        flat_rows, flat_s, flat_cpu = timed(lambda: flat_delete_before(cursor, project_id, cutoff))
    done, parts_s, parts_cpu = timed(lambda: services.events_retention_apply(cutoffs={project_id: cutoff}))
    shown, exposures_s, exposures_cpu = timed(lambda: services.exposures_retention_apply(cutoffs={project_id: cutoff}))
    with connection.cursor() as cursor:
        for table in ("event", "eventclaim", "exposure", "exposureclaim"):
            cursor.execute(f"SELECT count(*) FROM personalization_{table} WHERE project_id = %s", [project_id])
            assert cursor.fetchone()[0] == 0, table  # every claim went with its row
    assert done.deleted[project_id] == flat_rows == shown.deleted[project_id], (done.deleted, flat_rows, shown)
    return {
        "rows": flat_rows,
        "months_dropped": len(done.dropped),
        "flat_s": flat_s,
        "flat_cpu_s": flat_cpu,
        "partitioned_s": parts_s,
        "partitioned_cpu_s": parts_cpu,
        "exposures_s": exposures_s,
        "exposures_cpu_s": exposures_cpu,
        "exposure_months_dropped": len(shown.dropped),
    }


def flat_delete_before(cursor, project_id: int, before: datetime, chunk: int = 20_000) -> int:
    """The plain table's retention before 0013: its events older than `before`, a committed chunk at a time
    (its unique key went with its rows; there were no claims)."""
    from django.db import transaction

    layout(cursor, "flat")
    deleted = 0
    while True:
        with transaction.atomic():
            cursor.execute(
                "DELETE FROM personalization_event WHERE ts < %s AND (id, ts) IN"
                " (SELECT id, ts FROM personalization_event WHERE project_id = %s AND ts < %s LIMIT %s)",
                [before, project_id, before, chunk],
            )
            deleted += cursor.rowcount
        if cursor.rowcount < chunk:
            layout(cursor, "partitioned")
            return deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the data, 2 timed runs")
    args = parser.parse_args()
    exposures = 50_000 if args.quick else 200_000
    drained = 50_000 if args.quick else 200_000
    per_month = 25_000 if args.quick else 100_000
    runs = 3 if args.quick else 5

    database_url, _ = _common.bench_environment(database=DATABASE)
    database_fresh(database_url)
    _common.django_setup(migrate=True)

    from django.db import connection

    from personalization.models import Project

    began = time.perf_counter()
    project = Project.objects.create(slug="lift-bench", name="Lift bench")
    lift_build(project, exposures)
    with connection.cursor() as cursor:
        flat_copy(cursor)
        layout(cursor, "partitioned")
    retention_project, cutoff = retention_build(per_month)
    print(f"built both layouts in {time.perf_counter() - began:.0f} s", flush=True)

    lift = lift_measure(project, runs)
    drain = drain_measure(project, drained)
    retention = retention_measure(retention_project, cutoff)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3)

    print(f"\n{exposures:,} exposures, {4 * exposures:,} events; median of {runs} runs, layouts alternated")
    print("                                        plain table   partitioned   partitioned / plain")
    for kind, label in (("single", "lift report, 1 metric by segment"), ("metrics5", "lift report, 5 metrics by attr")):
        a, b = lift[f"{kind}_flat"], lift[f"{kind}_partitioned"]
        print(f"  {label:36s}  {a:9.3f} s   {b:9.3f} s   {b / a:6.2f}")
    a, b = drain["flat"], drain["partitioned"]
    print(f"  {'drain write, events/s':36s}  {a:11,.0f}   {b:11,.0f}   {b / a:6.2f}  ({drain['events']:,} events)")
    a, b = retention["flat_s"], retention["partitioned_s"]
    print(
        f"  {'retention of a year':36s}  {a:9.2f} s   {b:9.2f} s   {b / a:6.3f}  ({retention['rows']:,} events,"
        f" {retention['months_dropped']} months dropped)"
    )
    a, b = retention["flat_cpu_s"], retention["partitioned_cpu_s"]
    print(f"  {'  CPU s (process + PG backend)':36s}  {a:9.2f} s   {b:9.2f} s   {b / a:6.3f}  (claims included)")
    print(
        f"  {'retention of a year of exposures':36s}  {'':11s}   {retention['exposures_s']:9.2f} s"
        f"          ({retention['exposure_months_dropped']} months dropped; {retention['exposures_cpu_s']:.2f} CPU s)"
    )
    print(
        json.dumps(
            {
                "exposures": exposures,
                "lift_single_flat_s": round(lift["single_flat"], 3),
                "lift_single_partitioned_s": round(lift["single_partitioned"], 3),
                "lift_single_ratio": ratio(lift["single_partitioned"], lift["single_flat"]),
                "lift_metrics5_flat_s": round(lift["metrics5_flat"], 3),
                "lift_metrics5_partitioned_s": round(lift["metrics5_partitioned"], 3),
                "lift_metrics5_ratio": ratio(lift["metrics5_partitioned"], lift["metrics5_flat"]),
                "drain_events": drain["events"],
                "drain_flat_events_per_s": round(drain["flat"]),
                "drain_partitioned_events_per_s": round(drain["partitioned"]),
                "drain_ratio": ratio(drain["partitioned"], drain["flat"]),
                "retention_events": retention["rows"],
                "retention_months_dropped": retention["months_dropped"],
                "retention_flat_s": round(retention["flat_s"], 3),
                "retention_partitioned_s": round(retention["partitioned_s"], 3),
                "retention_ratio": ratio(retention["partitioned_s"], retention["flat_s"]),
                "retention_flat_cpu_s": round(retention["flat_cpu_s"], 3),
                "retention_partitioned_cpu_s": round(retention["partitioned_cpu_s"], 3),
                "retention_cpu_ratio": ratio(retention["partitioned_cpu_s"], retention["flat_cpu_s"]),
                "retention_exposures_s": round(retention["exposures_s"], 3),
                "retention_exposures_cpu_s": round(retention["exposures_cpu_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
