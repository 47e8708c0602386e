"""Measure event ingestion: POST /api/v1/events over HTTP, then the drain from Redis into PostgreSQL.

    python bench/ingest.py            # 20 s of HTTP load per endpoint, 200,000 events drained per pass
    python bench/ingest.py --quick    # 5 s of HTTP load per endpoint, 50,000 events per pass

(a) The decide server is started as production starts it: granian WSGI, KAIROS_ROLE=decide,
    2 workers with 2 blocking threads each.
(b) `wrk` (Debian's; installed with apt-get when missing) posts batches of 100 events from
    another process. Its Lua script rotates pre-generated bodies (a realistic mix of page_view,
    click, search and purchase over 10,000 users) and rewrites every event_id per request, so
    every accepted event is unique. The same server's /healthz gives the trivial-endpoint rate.
    wrk shares the two cores with the server, so both rates are lower than on separate machines.
(c) With the server stopped, the drain (services.events_drain_backlog, in process, as the Celery
    task runs it: each next step read while the current one is written) moves three passes of N
    events into PostgreSQL:
      1. the newest N events accepted over HTTP (older entries are trimmed away), from people
         mostly seen for the first time, so it creates their profiles as it goes;
      2. N more events from the same 10,000 people, every one of them already known;
      3. as 2, with two drain processes side by side.
    The bench checks that every event left in the stream is stored exactly once.

Everything runs against its own PostgreSQL database (kairos_bench, created and migrated when
missing) and its own Redis database (14) with a project of its own, whose rows are deleted at the
end, so the demo's data is never touched. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _common  # noqa: E402  (needs ROOT on sys.path; imports no Django)

BENCH_SLUG_PREFIX = "bench-ingest-"
USERS = 10_000
LOGGED_IN_SHARE = 0.4
BATCH = 100
TARGET_DRAIN_EVENTS_PER_S = 10_000
# page_view dominates real traffic; purchases are rare but carry a value and bigger properties.
EVENT_MIX = [("page_view", 0.60), ("click", 0.25), ("search", 0.12), ("purchase", 0.03)]

WRK_EVENTS_LUA = r"""
-- Rotates pre-generated bodies; "@@" in every event_id becomes a prefix unique to this request.
local bodies, counter, tag = {}, 0, "x"
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

function init(args)
  tag = args[1]
  for line in io.lines(args[2]) do bodies[#bodies + 1] = line end
end

function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  body = (body:gsub("@@", tag .. tid .. "-" .. counter))
  return wrk.format("POST", "/api/v1/events", headers, body)
end
"""

# --- traffic ---------------------------------------------------------------------------------


def _event(rng: random.Random, user: int, ts: datetime | str, event_id: str) -> dict:
    etype = rng.choices([t for t, _ in EVENT_MIX], weights=[w for _, w in EVENT_MIX])[0]
    stamp = ts if isinstance(ts, str) else ts.isoformat()
    event: dict = {"event_id": event_id, "type": etype, "anonymous_id": f"anon-{user}", "timestamp": stamp}
    if user % 10 < LOGGED_IN_SHARE * 10:
        event["user_id"] = f"user-{user}"
    product = rng.randrange(2_000)
    if etype == "page_view":
        event["properties"] = {"url": f"/products/{product}", "referrer": rng.choice(["", "google", "newsletter"])}
    elif etype == "click":
        event["properties"] = {"target": rng.choice(["#add-to-cart", "#size", ".related a", "#reviews"])}
    elif etype == "search":
        event["properties"] = {"query": rng.choice(["trail shoes", "rain jacket", "tent", "socks", "headlamp"])}
    else:
        event["value"] = round(rng.uniform(9, 300), 2)
        event["properties"] = {"order_id": f"o-{event_id}", "items": [f"sku-{product}", f"sku-{product + 1}"]}
    return event


def batch_make(rng: random.Random, id_prefix: str, now: datetime) -> dict:
    """One SDK-like flush: ten sessions of ten events, each session from one of USERS users."""
    events = []
    for session in range(BATCH // 10):
        user = rng.randrange(USERS)
        start = now - timedelta(seconds=rng.randrange(3_600))
        for n in range(10):
            # a few seconds apart, so no click counts as a double click (noise)
            events.append(_event(rng, user, start + timedelta(seconds=3 * n), f"{id_prefix}-{session * 10 + n}"))
    return {"events": events}


# --- HTTP phase -------------------------------------------------------------------------------


# --- drain phase ------------------------------------------------------------------------------


def stream_fill(project_id: int, events: int, id_prefix: str, seed: int, every_person: bool = False) -> int:
    """Accept `events` more events in process, through the same validation as the endpoint."""
    from personalization import services

    rng = random.Random(seed)
    now = datetime.now(UTC)
    accepted = 0
    for n in range(0, events, BATCH):
        if every_person:
            stamp = (now - timedelta(hours=2)).isoformat()
            payload = {"events": [_event(rng, user, stamp, f"{id_prefix}{user}") for user in range(n, n + BATCH)]}
        else:
            payload = batch_make(rng, f"{id_prefix}{n}", now)
        accepted += len(services.events_ingest(project_id=project_id, payload=payload).accepted)
    return accepted


def stream_trim(events: int) -> dict:
    """Keep only the newest entries holding `events` events; counts what the stream held before and after."""
    from personalization import redis_client, rkeys

    client = redis_client.worker()

    def count() -> int:
        total, start = 0, "-"
        while batch := client.xrange(rkeys.EVENTS_STREAM, min=start, count=500):
            total += sum(fields[b"d"].count(b'"event_id"') for _, fields in batch)
            start = "(" + batch[-1][0].decode()
        return total

    before = count()
    client.xtrim(rkeys.EVENTS_STREAM, maxlen=events // BATCH, approximate=False)
    return {"before": before, "after": count()}


def drain_loop() -> tuple[int, float, dict]:
    """Drain until the stream is empty: events moved, seconds, and the CPU seconds spent by this process
    and by PostgreSQL (less sensitive than the rate to other work on the machine). PostgreSQL's is the
    whole server's: the drain resolves the next step's people on a second connection (its reader
    thread's), and the WAL writer's work is the drain's too; with two drain processes each counts the
    server over its own run, and the figure given is their mean."""
    from personalization import services

    backend, process = _common.server_cpu_seconds(), time.process_time()
    started = time.perf_counter()
    moved = services.events_drain_backlog()
    seconds = time.perf_counter() - started
    backend_after = _common.server_cpu_seconds()
    cpu = {"drain": time.process_time() - process, "postgres": None if backend is None else backend_after - backend}
    return moved, seconds, cpu


def cpu_per_thousand(moved: int, cpu: dict) -> str:
    if not moved:
        return ""
    drain, postgres = 1e6 * cpu["drain"] / moved, cpu["postgres"]
    backend = "" if postgres is None else f" + {1e6 * postgres / moved:.1f} ms in PostgreSQL"
    return f"; CPU per 1,000 events: {drain:.1f} ms in the drain{backend}"


def drain_worker() -> int:
    """`--drain-worker`: one of the parallel drain processes; drains after "go" on stdin."""
    _common.bench_environment()
    _common.django_setup()
    from django.db import connection

    from personalization import redis_client, services

    connection.ensure_connection()
    services.stream_ensure_group(redis_client.worker())
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    moved, _, cpu = drain_loop()
    print(json.dumps({"moved": moved, "started": started, "ended": time.time(), "cpu": cpu}), flush=True)
    return 0


def drain_parallel(processes: int) -> tuple[int, float, dict]:
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--drain-worker"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            if worker.stdout.readline().strip() != "ready":
                raise SystemExit("a drain worker failed to start")
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [json.loads(worker.communicate(timeout=900)[0].strip().splitlines()[-1]) for worker in workers]
    finally:
        for worker in workers:
            _common.process_stop(worker)
    moved = sum(r["moved"] for r in results)
    postgres = [r["cpu"]["postgres"] for r in results]
    # Each process counted the whole server over (nearly) the same seconds: the mean, not the sum.
    server = None if None in postgres else sum(postgres) / len(postgres)
    cpu = {"drain": sum(r["cpu"]["drain"] for r in results), "postgres": server}
    return moved, max(r["ended"] for r in results) - min(r["started"] for r in results), cpu


def stored_counts(project_id: int) -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM personalization_event WHERE project_id = %s", [project_id]
        )
        return cursor.fetchone()


def accepted_total(project_id: int) -> int:
    """Events the endpoint accepted, from the per-minute counters it keeps in Redis."""
    from personalization import redis_client, rkeys

    client = redis_client.worker()
    keys = list(client.scan_iter(match=rkeys.metric(project_id, "events", 0).removesuffix("0") + "*"))
    return sum(int(v) for v in client.mget(keys)) if keys else 0


def project_rows_delete(project_ids: list[int]) -> None:
    """Remove bench projects: their events, identities and profiles in bulk, then the project row."""
    from django.db import DatabaseError, connection, transaction

    from personalization.models import Project

    for project_id in project_ids:
        with transaction.atomic(), connection.cursor() as cursor:
            for table in ("personalization_event", "personalization_profileidentity"):
                cursor.execute(f"DELETE FROM {table} WHERE project_id = %s", [project_id])
        try:
            with transaction.atomic():
                Project.objects.filter(pk=project_id).delete()
        except DatabaseError as error:  # e.g. a model whose migration is not written yet
            print(
                f"warning: bench project {project_id} left in {_common.BENCH_DB}: {error}".splitlines()[0],
                file=sys.stderr,
            )


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run, about a minute")
    parser.add_argument("--drain-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain_worker:
        return drain_worker()

    http_seconds = 5 if args.quick else 20
    drain_events = 50_000 if args.quick else 200_000
    database_url, _ = _common.bench_environment()
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)
    from personalization import redis_client, services
    from personalization.models import Project

    wrk = _common.wrk_ensure()
    # Redis db 14 holds bench data only (bench/decide.py publishes its part again when it is missing).
    redis_client.worker().flushdb()
    project_rows_delete(list(Project.objects.filter(slug__startswith=BENCH_SLUG_PREFIX).values_list("pk", flat=True)))
    project = services.project_create(name="Ingest bench", slug=f"{BENCH_SLUG_PREFIX}{int(time.time())}")
    _, key = services.api_key_create(project=project, kind="public", name="bench")
    services.stream_ensure_group(redis_client.worker())

    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    server = None
    figures: dict = {}
    try:
        rng = random.Random(7)
        now = datetime.now(UTC)
        bodies = workdir / "bodies.jsonl"
        with bodies.open("w") as out:
            for n in range(500):
                out.write(json.dumps(batch_make(rng, f"@@-{n}", now), separators=(",", ":")) + "\n")
        events_lua = workdir / "events.lua"
        events_lua.write_text(WRK_EVENTS_LUA + _common.WRK_DONE_LUA)
        done_lua = workdir / "done.lua"
        done_lua.write_text(_common.WRK_DONE_LUA)

        port = _common.free_port()
        server = _common.server_start(port)
        base = f"http://127.0.0.1:{port}"
        connections = 8
        auth = {"BENCH_KEY": key}  # read by the Lua script, so the key is not on a command line
        print(f"decide server (granian, 2 workers) on :{port}; wrk -t2 -c{connections}", flush=True)
        _common.wrk_run(wrk, f"{base}/api/v1/events", events_lua, 2, connections, ["w", str(bodies)], auth)  # warm-up
        _common.wrk_run(wrk, f"{base}/healthz", done_lua, 2, connections)
        before = accepted_total(project.pk)
        events_http = _common.wrk_run(
            wrk, f"{base}/api/v1/events", events_lua, http_seconds, connections, ["h", str(bodies)], auth
        )
        # What the endpoint accepted while wrk ran (its own counters), not requests x 100.
        events_per_s = (accepted_total(project.pk) - before) / (events_http["duration_us"] / 1e6)
        healthz = _common.wrk_run(wrk, f"{base}/healthz", done_lua, http_seconds, connections)
        _common.process_stop(server)
        server = None
        for name, result in (("events", events_http), ("healthz", healthz)):
            if result["non_2xx"] or result["socket_errors"]:
                print(f"warning: {name}: {result['non_2xx']} non-2xx answers, {result['socket_errors']} socket errors")
        print(
            f"POST /api/v1/events: {events_http['rps']:,.0f} requests/s, {events_per_s:,.0f} events/s accepted,"
            f" p50 {events_http['p50_us'] / 1000:.1f} ms, p99 {events_http['p99_us'] / 1000:.1f} ms",
            flush=True,
        )
        print(f"GET /healthz: {healthz['rps']:,.0f} requests/s, p99 {healthz['p99_us'] / 1000:.1f} ms", flush=True)

        accepted_http = accepted_total(project.pk)
        in_stream = stream_trim(drain_events)
        stream_complete = in_stream["before"] == accepted_http
        if not stream_complete:
            held = in_stream["before"]
            print(f"ERROR: the endpoint counted {accepted_http:,} accepted events; the stream holds {held:,}")
        accepted = in_stream["after"]
        if accepted < drain_events:
            accepted += stream_fill(project.pk, drain_events - accepted, "fill-a-", seed=11)
        print(f"pass 1: the newest {accepted:,} events accepted over HTTP, people seen for the first time", flush=True)
        moved, seconds, cpu = drain_loop()
        first_rate, first_cpu = moved / seconds, cpu
        print(
            f"  1 drain process: {moved:,} events in {seconds:.1f} s = {first_rate:,.0f} events/s"
            + cpu_per_thousand(moved, cpu),
            flush=True,
        )
        stored, distinct = stored_counts(project.pk)
        exactly_once = stored == distinct == accepted
        if not exactly_once:
            print(f"ERROR: accepted {accepted:,}, stored {stored:,}, distinct event ids {distinct:,}")

        # Untimed: one event from every person, so the next passes meet only people already known.
        accepted += stream_fill(project.pk, USERS, "hello-", seed=12, every_person=True)
        drain_loop()
        accepted += stream_fill(project.pk, drain_events, "fill-b-", seed=13)
        moved, seconds, cpu = drain_loop()
        known_rate, known_cpu = moved / seconds, cpu
        print(
            f"pass 2, known people: 1 drain process: {moved:,} in {seconds:.1f} s = {known_rate:,.0f} events/s"
            + cpu_per_thousand(moved, cpu)
        )

        accepted += stream_fill(project.pk, drain_events, "fill-c-", seed=14)
        moved, seconds, cpu = drain_parallel(2)
        parallel_rate = moved / seconds
        print(
            f"pass 3, known people: 2 drain processes: {moved:,} in {seconds:.1f} s = {parallel_rate:,.0f} events/s"
            + cpu_per_thousand(moved, cpu)
        )
        stored, distinct = stored_counts(project.pk)
        exactly_once = exactly_once and stored == distinct == accepted
        print(f"stored {stored:,} rows, {distinct:,} distinct event ids, {accepted:,} accepted", flush=True)

        figures = {
            "ingest_http_events_per_s": round(events_per_s),
            "ingest_http_requests_per_s": round(events_http["rps"], 1),
            "ingest_http_p50_ms": round(events_http["p50_us"] / 1000, 2),
            "ingest_http_p99_ms": round(events_http["p99_us"] / 1000, 2),
            "ingest_http_errors": events_http["non_2xx"] + events_http["socket_errors"],
            "healthz_rps": round(healthz["rps"], 1),
            "healthz_p99_ms": round(healthz["p99_us"] / 1000, 2),
            # requests/s of POST /api/v1/events (100 events each) over requests/s of GET /healthz
            "events_vs_trivial_ratio": round(events_http["rps"] / healthz["rps"], 3),
            "ingest_http_accepted_events": accepted_http,
            "ingest_stream_holds_every_accepted_event": stream_complete,
            "drain_events_per_s": round(first_rate),
            "drain_known_people_events_per_s": round(known_rate),
            "drain_2_processes_events_per_s": round(parallel_rate),
            "drain_cpu_ms_per_1000_events": round(1e6 * first_cpu["drain"] / drain_events, 1),
            "drain_postgres_cpu_ms_per_1000_events": None
            if first_cpu["postgres"] is None
            else round(1e6 * first_cpu["postgres"] / drain_events, 1),
            "drain_known_cpu_ms_per_1000_events": round(1e6 * known_cpu["drain"] / drain_events, 1),
            "drain_known_postgres_cpu_ms_per_1000_events": None
            if known_cpu["postgres"] is None
            else round(1e6 * known_cpu["postgres"] / drain_events, 1),
            "drain_target_events_per_s": TARGET_DRAIN_EVENTS_PER_S,
            "drain_exactly_once": exactly_once,
            "events_per_request": BATCH,
        }
    finally:
        _common.process_stop(server)
        project_rows_delete([project.pk])
        redis_client.worker().flushdb()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures))
    return 0 if figures.get("drain_exactly_once") and figures.get("ingest_stream_holds_every_accepted_event") else 1


if __name__ == "__main__":
    sys.exit(main())
