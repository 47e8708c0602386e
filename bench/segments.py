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

The baseline of 1 is KMeans(n_init=1); of 3 the exact scan. Ends with one line of JSON.
"""

import argparse
import json
import os
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


def _backend_cpu_s(conn) -> float | None:
    """CPU seconds the connection's PostgreSQL backend has used (None when the server is not local)."""
    pid = conn.info.backend_pid
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 profiles instead of 1,000,000")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    database_url, _ = _common.bench_environment()
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)

    print(f"segments bench: {n:,} profiles × {DIMS} dims, {CENTRES} behavior centres", flush=True)
    x, labels = synthetic(n)
    print("clustering (k = 12):", flush=True)
    clustering = bench_clustering(x)
    conn = _connect(database_url)
    print("HNSW (cosine, m=16, ef_construction=64):", flush=True)
    hnsw = bench_hnsw(conn, x)
    print("lookalike queries (seed of 200 excluded, LIMIT 100, ef_search 200, relaxed_order):", flush=True)
    lookalike = bench_lookalike(conn, x, labels, queries=50 if args.quick else 200)
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.close()
    print("freshness (real worker, drain every second):", flush=True)
    freshness = bench_freshness(trials=8 if args.quick else 20)

    ours_s, ours_inertia = clustering["kairos"]
    base_s, base_inertia = clustering["kmeans_one_init"]
    print(
        f"ratio: Kairos clustering {ours_s / base_s:.2f}x the time of KMeans(n_init=1),"
        f" inertia {ours_inertia / base_inertia:.4f}x (≤ 1 is as good or better)"
    )
    print(
        json.dumps(
            {
                "bench": "segments",
                "profiles": n,
                "dims": DIMS,
                "cluster_kairos_s": round(ours_s, 2),
                "cluster_kairos_inertia": round(ours_inertia, 1),
                "cluster_minibatch_s": round(clustering["minibatch"][0], 2),
                "cluster_minibatch_inertia": round(clustering["minibatch"][1], 1),
                "cluster_kmeans_one_init_s": round(base_s, 2),
                "cluster_kmeans_one_init_inertia": round(base_inertia, 1),
                "cluster_time_ratio": round(ours_s / base_s, 3),
                "cluster_inertia_ratio": round(ours_inertia / base_inertia, 5),
                "hnsw_copy_s": round(hnsw["copy_s"], 2),
                "hnsw_build_s": round(hnsw["build_s"], 1),
                "hnsw_index_mb": round(hnsw["index_mb"], 1),
                "lookalike_p50_ms": round(lookalike["p50_ms"], 2),
                "lookalike_p95_ms": round(lookalike["p95_ms"], 2),
                "lookalike_cpu_ms": lookalike["cpu_ms"] and round(lookalike["cpu_ms"], 2),
                "lookalike_recall_at_100": round(lookalike["recall_at_100"], 4),
                "exact_scan_p50_ms": round(lookalike["exact_p50_ms"], 2),
                "freshness_p50_s": freshness["p50_s"] and round(freshness["p50_s"], 2),
                "freshness_p95_s": freshness["p95_s"] and round(freshness["p95_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
