"""Segments benchmark: clustering, HNSW build, lookalike queries and fold-in freshness.

    python bench/segments.py [--quick]

1. Clustering: 1,000,000 synthetic profiles × 64 dimensions (--quick: 100,000), unit vectors drawn
   around 12 behavior centres. Kairos's k-means (segments/kmeans.py: starts on a sample, then full
   Lloyd iterations) next to scikit-learn's MiniBatchKMeans and KMeans with one init on the same
   data in the same run: time and inertia (lower is better).
2. HNSW: the same vectors COPY'd (binary) into a pgvector table of the bench database, then the
   cosine HNSW index with the product's parameters (m=16, ef_construction=64): build time and size.
3. Lookalike queries: 200 seeds of 200 people from one centre; the query is the product's (centroid,
   seed excluded, LIMIT 100, ef_search 200, iterative_scan relaxed_order), after 30 warm-up queries:
   p50/p95 latency, the PostgreSQL backend's CPU time per query (what the query costs when it has a
   core to itself) and recall@100 against an exact scan in numpy. The index must fit shared_buffers
   (config/embedded.py sets 1 GB), or each query reads thousands of pages through the kernel.
4. Freshness: on a small real project with a Celery worker and the drain started every second (as
   beat does), the time from an event batch being accepted to the person's new segment being
   readable in decide's Redis hash: p50/p95 over several people.

5. Refit and clustering end to end (issue 19): a project of 1,000,000 people × 25 behavior events
   (--quick: 100,000), made by SQL in the bench database (12 interests, 80 % of each person's events
   on their own; page views, product views, searches with words of the interest, add-to-carts), kept
   for the next run. Then, in a child process as a worker runs them: the embedder refit (sample fit,
   streamed transform, meaning, staged write, swap with the HNSW index) and a clustering run with k
   chosen automatically (vectors read, k chosen on a sample, fit, cards, map, memberships written,
   published to decide's Redis): seconds per stage and in all, and peak memory, the child's (its
   VmHWM; getrusage of its children agrees) and its PostgreSQL backend's. The target is ≤ 5 minutes
   and ≤ 4 GB at 1M on a 2-core machine.

The baseline of 1 is KMeans(n_init=1); of 3 the exact scan. Ends with one line of JSON.
`--sections` runs some of the five (e.g. `--sections refit`).
"""

import argparse
import itertools
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common

DIMS = 64
CENTRES = 12
TABLE = "bench_segments_vectors"


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CENTRES, DIMS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, CENTRES, size=n)
    x = centres[labels] + rng.normal(scale=0.12, size=(n, DIMS)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def bench_clustering(x: np.ndarray) -> dict:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from segments.kmeans import kmeans_fit

    out = {}
    started = time.perf_counter()
    ours = kmeans_fit(x, CENTRES, seed=1)
    out["kairos"] = (time.perf_counter() - started, ours.inertia)
    started = time.perf_counter()
    mini = MiniBatchKMeans(n_clusters=CENTRES, random_state=1, batch_size=4096, n_init=1).fit(x)
    out["minibatch"] = (time.perf_counter() - started, float(mini.inertia_))
    started = time.perf_counter()
    full = KMeans(n_clusters=CENTRES, n_init=1, random_state=1).fit(x)
    out["kmeans_one_init"] = (time.perf_counter() - started, float(full.inertia_))
    for name, (seconds, inertia) in out.items():
        print(f"  {name:16s} {seconds:7.2f} s   inertia {inertia:12.1f}")
    return out


def _connect(database_url: str):
    import psycopg
    from pgvector.psycopg import register_vector

    conn = psycopg.connect(database_url, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    register_vector(conn)
    return conn


def bench_hnsw(conn, x: np.ndarray) -> dict:
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, vector vector({DIMS}))")
    started = time.perf_counter()
    with conn.cursor() as cur, cur.copy(f"COPY {TABLE} (id, vector) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "vector"])
        for i, row in enumerate(x):
            copy.write_row((i, row))
    copy_s = time.perf_counter() - started
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET max_parallel_maintenance_workers = 2")  # pgvector ≥ 0.6 builds HNSW in parallel
    started = time.perf_counter()
    conn.execute(
        f"CREATE INDEX {TABLE}_hnsw ON {TABLE} USING hnsw (vector vector_cosine_ops)"
        " WITH (m = 16, ef_construction = 64)"
    )
    build_s = time.perf_counter() - started
    size = conn.execute(f"SELECT pg_relation_size('{TABLE}_hnsw')").fetchone()[0]
    conn.execute(f"ANALYZE {TABLE}")
    print(f"  COPY {len(x):,} vectors {copy_s:.1f} s; HNSW build {build_s:.1f} s, {size / 2**20:.0f} MB")
    return {"copy_s": copy_s, "build_s": build_s, "index_mb": size / 2**20}


def _cpu_s(pid: int) -> float | None:
    """CPU seconds a local process has used (None when it is not readable, e.g. a remote server)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_cpu_s(conn) -> float | None:
    """CPU seconds the connection's PostgreSQL backend has used (None when the server is not local)."""
    return _cpu_s(conn.info.backend_pid)


def bench_lookalike(conn, x: np.ndarray, labels: np.ndarray, queries: int) -> dict:
    """Centroid queries after a warm-up (the index in shared buffers, as on a serving database).

    Besides wall time, the backend's CPU time per query: on a shared machine wall time includes
    waiting for a core, CPU time does not."""
    rng = np.random.default_rng(7)
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    conn.execute("SET hnsw.ef_search = 200")
    index_mb = conn.execute(f"SELECT pg_relation_size('{TABLE}_hnsw')").fetchone()[0] / 2**20
    buffers = "SELECT setting::bigint * 8192 / 1048576 FROM pg_settings WHERE name = 'shared_buffers'"
    buffers_mb = conn.execute(buffers).fetchone()[0]
    if index_mb > buffers_mb * 0.8:
        print(f"  note: the index ({index_mb:.0f} MB) does not fit shared_buffers ({buffers_mb} MB): pages are read")
    sql = f"SELECT id FROM {TABLE} WHERE id <> ALL(%s) ORDER BY vector <=> %s LIMIT 100"
    workload = []
    for q in range(queries + 30):
        members = np.flatnonzero(labels == q % CENTRES)
        seed = rng.choice(members, size=200, replace=False)
        centre = x[seed].mean(axis=0)
        workload.append((seed, centre / np.linalg.norm(centre)))
    for seed, centre in workload[:30]:  # warm-up, not timed
        conn.execute(sql, [seed.tolist(), centre]).fetchall()
    latencies, found, recalls, exact_s = [], [], [], []
    cpu_start = _backend_cpu_s(conn)
    for seed, centre in workload[30:]:
        started = time.perf_counter()
        rows = conn.execute(sql, [seed.tolist(), centre]).fetchall()
        latencies.append(time.perf_counter() - started)
        found.append({r[0] for r in rows})
    cpu_end = _backend_cpu_s(conn)
    # The exact scans run after the timed loop, so that they do not evict the index from CPU caches.
    for (seed, centre), rows in zip(workload[30:], found, strict=True):
        started = time.perf_counter()
        scores = x @ centre
        scores[seed] = -2
        exact = np.argpartition(-scores, 100)[:100]
        exact_s.append(time.perf_counter() - started)
        recalls.append(len(rows & set(exact.tolist())) / 100)
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    cpu_ms = None if cpu_start is None else (cpu_end - cpu_start) / queries * 1000
    recall = float(np.mean(recalls))
    exact_p50 = float(np.median(exact_s) * 1000)
    print(f"  lookalike query p50 {p50:.1f} ms, p95 {p95:.1f} ms, recall@100 {recall:.3f}")
    if cpu_ms is not None:
        print(f"  PostgreSQL backend CPU per query {cpu_ms:.2f} ms (wall time minus waiting for a core)")
    print(f"  exact scan (numpy, in memory) p50 {exact_p50:.1f} ms: HNSW is {exact_p50 / p50:.1f}x faster at p50")
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "cpu_ms": cpu_ms,
        "recall_at_100": recall,
        "exact_p50_ms": exact_p50,
    }


def _worker(env: dict, log_path: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "-c", "2", "-l", "warning"]
    log = log_path.open("wb")
    return subprocess.Popen(
        command, cwd=_common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def bench_freshness(trials: int) -> dict:
    """Accepted event → new membership in decide's hash, with a real worker and a drain every second."""
    from django.db import transaction

    from demo import world as demo
    from personalization import redis_client, rkeys
    from personalization import services as p_services
    from personalization.models import ProfileIdentity, Project
    from segments import services as s_services
    from segments.models import Segment, SegmentMembership

    Project.objects.filter(slug="segments-bench").delete()
    project = p_services.project_create(name="Segments bench", owner=None, slug="segments-bench")
    client = redis_client.worker()
    client.flushdb()
    end = datetime.now(UTC) - timedelta(minutes=5)
    people = demo.profiles_generate(1500, seed=3)
    events = []
    for session in demo.history_generate(people, end=end, days=14, seed=3, arms=lambda p: {}, starts={}):
        for event in session.events:
            events.append(demo.api_event(event, anonymous_id=session.profile.anonymous_id, user_id=None))
    for start in range(0, len(events), 1000):
        p_services.events_ingest(project_id=project.pk, payload={"events": events[start : start + 1000]})
    while p_services.events_drain(max_entries=50):
        pass
    s_services.embeddings_refit(project_id=project.pk)
    with transaction.atomic():
        run = s_services.clustering_run_request(project=project, k=8)
    run = s_services.clustering_run_execute(run_id=run.pk)
    yoga = next(s for s in Segment.objects.filter(run=run) if "yoga" in s.name.lower())
    env = {**os.environ}
    worker = _worker(env, _common.ROOT / "var" / "bench-segments-worker.log")
    stop = False
    latencies = []
    try:
        from personalization.tasks import events_drain_task

        time.sleep(3)  # the worker starts
        candidates = (
            SegmentMembership.objects.filter(segment__run=run)
            .exclude(segment=yoga)
            .values_list("profile_id", flat=True)[: trials + 1]
        )
        next_drain = 0.0
        for n, profile_id in enumerate(candidates):
            unit = ProfileIdentity.objects.filter(profile_id=profile_id).values_list("value", flat=True).first()
            key = rkeys.unit(project.pk, unit)
            now = datetime.now(UTC)
            batch = [
                {
                    "event_id": f"fresh-{n}-{i}",
                    "type": "page_view",
                    "anonymous_id": unit,
                    "timestamp": (now - timedelta(seconds=40 - i)).isoformat(),
                    "properties": {"url": "/c/yoga", "category": "yoga", "item": "cork-yoga-mat", "dwell_ms": 20000},
                }
                for i in range(40)
            ]
            accepted = time.perf_counter()
            p_services.events_ingest(project_id=project.pk, payload={"events": batch})
            while not stop:
                if time.perf_counter() >= next_drain:  # beat's one-second drain schedule
                    events_drain_task.apply_async(expires=5)
                    next_drain = time.perf_counter() + 1.0
                raw = client.hget(key, "segs")
                if raw and yoga.key in raw.decode().split():
                    if n > 0:  # the first person warms the worker up (imports, the embedder's basis)
                        latencies.append(time.perf_counter() - accepted)
                    break
                if time.perf_counter() - accepted > 30:
                    print(f"  trial {n}: no change within 30 s", flush=True)
                    break
                time.sleep(0.02)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    if not latencies:
        return {"p50_s": None, "p95_s": None, "trials": 0}
    p50, p95 = np.percentile(latencies, [50, 95])
    print(
        f"  event accepted → new segment readable by decide: p50 {p50:.2f} s, p95 {p95:.2f} s ({len(latencies)} people)"
    )
    return {"p50_s": float(p50), "p95_s": float(p95), "trials": len(latencies)}


EVENTS_PER_PERSON = 25
INTERESTS = (
    "running", "yoga", "camping", "cycling", "swimming", "tennis", "skiing", "climbing", "fishing", "golf",
    "hiking", "fitness",
)  # fmt: skip
# Four searches per interest, in words a person with that interest types.
QUERIES = (
    "marathon training plan", "shoes for long distance", "best trail runners", "how to run faster",
    "mat for hot studio", "beginner flow sequence", "stretching for flexibility", "meditation cushion",
    "tent for two people", "sleeping bag for cold nights", "portable camp stove", "lantern for the campsite",
    "road bike under 1000", "bicycle helmet with lights", "chain lube for bikes", "padded cycling shorts",
    "goggles that do not fog", "pool training fins", "swimsuit for laps", "open water wetsuit",
    "racket for beginners", "tennis balls pressurised", "court shoes clay", "string tension advice",
    "ski boots fitting", "goggles for snow", "waxing skis at home", "helmet for the slopes",
    "chalk bag for bouldering", "climbing shoes sizing", "rope for sport climbing", "belay device",
    "fly fishing rod", "lures for trout", "waders waterproof", "tackle box organiser",
    "golf clubs for beginners", "putting practice mat", "golf balls soft feel", "glove for the left hand",
    "waterproof hiking boots", "daypack with rain cover", "trekking poles folding", "map and compass",
    "dumbbells adjustable", "kettlebell workout", "protein for recovery", "resistance bands set",
)  # fmt: skip
REFIT_PROJECT = "segments-refit-bench-{n}"


def _refit_data(n: int) -> int:
    """The bench project of n people × EVENTS_PER_PERSON events (made once, by SQL; reused when there)."""
    from django.db import connection

    from personalization import services as p_services
    from personalization.models import Project

    slug = REFIT_PROJECT.format(n=n)
    project = Project.objects.filter(slug=slug).first()
    if project is not None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM personalization_event WHERE project_id = %s", [project.pk])
            if cursor.fetchone()[0] == n * EVENTS_PER_PERSON:
                print(f"  reusing {n:,} people × {EVENTS_PER_PERSON} events (project {slug})", flush=True)
                return project.pk
        project.delete()
    project = p_services.project_create(name=f"Refit bench {n}", owner=None, slug=slug)
    started = time.perf_counter()
    end = datetime.now(UTC)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO personalization_profile (project_id, external_id, attributes, consent, do_not_personalize,"
            " first_seen, last_seen) SELECT %s, 'refit-' || g, jsonb_build_object('interest', g %% 12), '{}', false,"
            " %s, %s FROM generate_series(1, %s) g",
            [project.pk, end - timedelta(days=20), end, n],
        )
        # Each event: 80 % on the person's own interest; a type; the properties that type carries.
        cursor.execute(
            "INSERT INTO personalization_event (project_id, profile_id, event_id, type, ts, session_id, value,"
            " properties, received_at)"
            " SELECT p.project_id, p.id, p.id || '-' || i,"
            "  CASE WHEN c.r < 0.35 THEN 'page_view' WHEN c.r < 0.7 THEN 'product_view'"
            "   WHEN c.r < 0.9 THEN 'search' ELSE 'add_to_cart' END,"
            "  %(end)s - make_interval(secs => random() * 20 * 86400), '', NULL,"
            "  CASE WHEN c.r < 0.35 THEN jsonb_build_object('url', '/c/' || c.category, 'category', c.category,"
            "    'dwell_ms', floor(random() * 60000))"
            "   WHEN c.r < 0.7 THEN jsonb_build_object('url', '/p/' || c.item, 'item', c.item, 'category', c.category,"
            "    'dwell_ms', floor(random() * 90000))"
            "   WHEN c.r < 0.9 THEN jsonb_build_object('query', (%(queries)s::text[])[1 + c.interest * 4 + c.sub])"
            "   ELSE jsonb_build_object('item', c.item, 'category', c.category) END,"
            "  %(end)s"
            " FROM personalization_profile p CROSS JOIN generate_series(1, %(events)s) i"
            " CROSS JOIN LATERAL (SELECT r, interest, sub,"
            "   (%(interests)s::text[])[1 + interest] || '-' || (ARRAY['gear', 'apparel', 'accessories'])[1 + sub %% 3]"
            "    AS category,"
            "   (%(interests)s::text[])[1 + interest] || '-item-' || floor(random() * 40) AS item"
            "  FROM (SELECT random() + 0 * i AS r,"
            "    CASE WHEN random() < 0.8 THEN (p.attributes ->> 'interest')::int ELSE floor(random() * 12)::int END"
            "     AS interest, floor(random() * 4)::int AS sub) AS draw) AS c"
            " WHERE p.project_id = %(project)s",
            {
                "project": project.pk,
                "end": end,
                "events": EVENTS_PER_PERSON,
                "queries": list(QUERIES),
                "interests": list(INTERESTS),
            },
        )
        cursor.execute("ANALYZE personalization_event")
        cursor.execute("ANALYZE personalization_profile")
    print(f"  made {n:,} people × {EVENTS_PER_PERSON} events in {time.perf_counter() - started:.0f} s", flush=True)
    return project.pk


def _vm_mb(pid: int | str, field: str = "VmHWM") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def refit_child(project_id: int) -> None:
    """In its own process (its peak memory is the run's alone): refit, then a clustering run, timed by stage."""
    from django.db import connection

    from segments import services as s_services
    from segments.models import ClusteringRun

    # On a shared machine wall time includes waiting for a core: CPU time (this process and its
    # PostgreSQL backend) is recorded beside it, per stage.
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    marks: list[tuple[float, float, str]] = []

    def progress(pct: int, label: str) -> None:
        cpu = time.process_time() + (_cpu_s(backend) or 0.0)
        marks.append((time.perf_counter(), cpu, re.sub(r"[\d,]+", "N", label)))

    started = time.perf_counter()
    progress(0, "start")
    version = s_services.embeddings_refit(project_id=project_id, progress=progress)
    refit_s = time.perf_counter() - started
    run = ClusteringRun.objects.create(project_id=project_id, k_requested=None)  # not queued: run here
    progress(0, "Clustering run starts")
    run = s_services.clustering_run_execute(run_id=run.pk, observe=progress)
    total_s = time.perf_counter() - started
    progress(100, "end")
    stages: dict[str, list[float]] = {}
    for (at, cpu, label), (then, cpu_then, _) in itertools.pairwise(marks):
        wall_cpu = stages.setdefault(label, [0.0, 0.0])
        wall_cpu[0] += then - at
        wall_cpu[1] += cpu_then - cpu
    print(
        "REFIT_RESULT "
        + json.dumps(
            {
                "people": version.profiles if version else 0,
                "features": version.features if version else 0,
                "refit_s": round(refit_s, 1),
                "clustering_s": round(total_s - refit_s, 1),
                "total_s": round(total_s, 1),
                "k": run.k,
                "status": run.status,
                "error": run.error,
                "stages_s": {k: [round(v[0], 1), round(v[1], 1)] for k, v in stages.items()},
                "cpu_s": round(marks[-1][1] - marks[0][1], 1),
                "peak_mb": _vm_mb("self"),
                "postgres_backend_peak_mb": _vm_mb(connection.connection.info.backend_pid),
            }
        ),
        flush=True,
    )


def bench_refit(n: int) -> dict:
    """The refit and clustering run end to end on n people, in a child process; its result and peak memory."""
    project_id = _refit_data(n)
    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--refit-child", str(project_id)],
        cwd=_common.ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
    )
    line = next((x for x in child.stdout.splitlines() if x.startswith("REFIT_RESULT ")), None)
    if child.returncode or line is None:
        print(child.stdout[-3000:], child.stderr[-3000:])
        raise SystemExit(f"the refit child failed (exit {child.returncode})")
    result = json.loads(line.split(" ", 1)[1])
    result["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"  {'stage (from its progress label)':52s} {'wall':>7s}  {'CPU':>7s}")
    for name, (wall, cpu) in result["stages_s"].items():
        print(f"  {name:52s} {wall:6.1f} s {cpu:6.1f} s")
    print(
        f"  {result['people']:,} people: refit {result['refit_s']:.1f} s + clustering (k = {result['k']})"
        f" {result['clustering_s']:.1f} s = {result['total_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU"
        f" (this process and its PostgreSQL backend); peak memory {result['peak_mb']:.0f} MB"
        f" (PostgreSQL backend {result['postgres_backend_peak_mb'] or 0:.0f} MB)"
    )
    return result


SECTIONS = ("clustering", "hnsw", "lookalike", "freshness", "refit")


def _r(value, digits: int):
    return None if value is None else round(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 profiles instead of 1,000,000")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)} (default all)"
    )
    parser.add_argument("--refit-child", type=int, help=argparse.SUPPRESS)  # the child process of bench_refit
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    sections = set(args.sections.split(","))
    if unknown := sections - set(SECTIONS):
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    database_url, _ = _common.bench_environment()
    if args.refit_child:
        _common.django_setup()
        refit_child(args.refit_child)
        return
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)

    out: dict = {"bench": "segments", "profiles": n, "dims": DIMS}
    if sections & {"clustering", "hnsw", "lookalike"}:
        print(f"segments bench: {n:,} profiles × {DIMS} dims, {CENTRES} behavior centres", flush=True)
        x, labels = synthetic(n)
    if "clustering" in sections:
        print("clustering (k = 12):", flush=True)
        clustering = bench_clustering(x)
        ours_s, ours_inertia = clustering["kairos"]
        base_s, base_inertia = clustering["kmeans_one_init"]
        print(
            f"ratio: Kairos clustering {ours_s / base_s:.2f}x the time of KMeans(n_init=1),"
            f" inertia {ours_inertia / base_inertia:.4f}x (≤ 1 is as good or better)"
        )
        out |= {
            "cluster_kairos_s": round(ours_s, 2),
            "cluster_kairos_inertia": round(ours_inertia, 1),
            "cluster_minibatch_s": round(clustering["minibatch"][0], 2),
            "cluster_minibatch_inertia": round(clustering["minibatch"][1], 1),
            "cluster_kmeans_one_init_s": round(base_s, 2),
            "cluster_kmeans_one_init_inertia": round(base_inertia, 1),
            "cluster_time_ratio": round(ours_s / base_s, 3),
            "cluster_inertia_ratio": round(ours_inertia / base_inertia, 5),
        }
    if sections & {"hnsw", "lookalike"}:
        conn = _connect(database_url)
        print("HNSW (cosine, m=16, ef_construction=64):", flush=True)
        hnsw = bench_hnsw(conn, x)
        out |= {
            "hnsw_copy_s": round(hnsw["copy_s"], 2),
            "hnsw_build_s": round(hnsw["build_s"], 1),
            "hnsw_index_mb": round(hnsw["index_mb"], 1),
        }
        if "lookalike" in sections:
            print("lookalike queries (seed of 200 excluded, LIMIT 100, ef_search 200, relaxed_order):", flush=True)
            lookalike = bench_lookalike(conn, x, labels, queries=50 if args.quick else 200)
            out |= {
                "lookalike_p50_ms": round(lookalike["p50_ms"], 2),
                "lookalike_p95_ms": round(lookalike["p95_ms"], 2),
                "lookalike_cpu_ms": _r(lookalike["cpu_ms"], 2),
                "lookalike_recall_at_100": round(lookalike["recall_at_100"], 4),
                "exact_scan_p50_ms": round(lookalike["exact_p50_ms"], 2),
            }
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.close()
    if "freshness" in sections:
        print("freshness (real worker, drain every second):", flush=True)
        freshness = bench_freshness(trials=8 if args.quick else 20)
        out |= {"freshness_p50_s": _r(freshness["p50_s"], 2), "freshness_p95_s": _r(freshness["p95_s"], 2)}
    if "refit" in sections:
        print(f"refit and clustering end to end ({n:,} people × {EVENTS_PER_PERSON} events):", flush=True)
        refit = bench_refit(n)
        out |= {
            "refit_people": refit["people"],
            "refit_s": refit["refit_s"],
            "refit_clustering_s": refit["clustering_s"],
            "refit_total_s": refit["total_s"],
            "refit_k": refit["k"],
            "refit_cpu_s": refit["cpu_s"],
            "refit_stages_wall_cpu_s": refit["stages_s"],
            "refit_peak_mb": _r(refit["peak_mb"], 0),
            "refit_children_maxrss_mb": round(refit["children_maxrss_mb"], 0),
            "refit_postgres_backend_peak_mb": _r(refit["postgres_backend_peak_mb"], 0),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
