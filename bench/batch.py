"""Measure batch decide (POST /api/v1/decide/batch) against single decide calls, in the same run.

    python bench/batch.py            # 5,000 single calls, 5 batches of 10,000 units
    python bench/batch.py --quick    # 1,000 single calls, 2 batches of 10,000 units

Data: bench/decide.py's project (100,000 profiles, 10 experiences; seeded once in the bench database,
reused) on the decide service started as production starts it (bench/_common.server_start). Every
unit is a returning profile (`u<n>`, a real hash with attributes, segments and sticky assignments),
drawn at random, the same kind of unit for both ways:
- single: one decide call per unit, one keep-alive connection, one after the other (a send-time tool
  that loops over its recipients);
- batch: calls of 10,000 units, the streamed NDJSON read to its last line, one connection.
units/s is units over wall time. The exposures both append are taken out of the stream afterwards.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _common  # noqa: E402  (needs ROOT on sys.path; imports no Django)
from bench import decide as decide_bench  # noqa: E402

BATCH_UNITS = 10_000


def _post(conn: http.client.HTTPConnection, path: str, key: str, body: bytes) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def singles(port: int, key: str, units: list[str]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    for unit in units:
        status, _ = _post(conn, "/api/v1/decide", key, orjson.dumps({"user_id": unit}))
        if status != 200:
            raise SystemExit(f"single decide answered {status}")
    return time.perf_counter() - started


def batches(port: int, key: str, calls: list[list[str]]) -> tuple[float, float]:
    """(wall seconds for every call, mean ms to the first line of a call)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    first_line_ms = []
    started = time.perf_counter()
    for units in calls:
        sent = time.perf_counter()
        conn.request(
            "POST",
            "/api/v1/decide/batch",
            body=orjson.dumps({"units": units}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"batch decide answered {response.status}: {response.read()[:300]!r}")
        first = response.readline()
        first_line_ms.append((time.perf_counter() - sent) * 1000)
        lines = 1 + response.read().count(b"\n")
        if lines != len(units) or b"assignments" not in first:
            raise SystemExit(f"batch decide answered {lines} lines for {len(units)} units")
    return time.perf_counter() - started, sum(first_line_ms) / len(first_line_ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 single calls and 2 batches")
    args = parser.parse_args()
    single_n, batch_calls = (1_000, 2) if args.quick else (5_000, 5)

    database_url, _ = _common.bench_environment()
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)
    from personalization import services
    from personalization.models import ApiKey, Project

    load_before = os.getloadavg()[0]
    if load_before > 1.0:
        print(f"note: load average {load_before:.1f} on {os.cpu_count()} cores before the bench; figures will be low")
    project_id = decide_bench.seed()
    ApiKey.objects.filter(project_id=project_id, name="bench batch").delete()
    _, key = services.api_key_create(project=Project.objects.get(pk=project_id), kind="public", name="bench batch")
    decide_bench.redis_publish(project_id)
    rng = random.Random(7)
    picked = rng.sample(range(decide_bench.PROFILES), single_n + batch_calls * BATCH_UNITS)
    units = [f"u{n}" for n in picked]
    since = decide_bench.stream_last_id()
    port = _common.free_port()
    server = _common.server_start(port)
    try:
        singles(port, key, units[:10])  # warm: the snapshot is loaded, connections made
        single_s = singles(port, key, units[10:single_n])
        rest = units[single_n:]
        calls = [rest[i : i + BATCH_UNITS] for i in range(0, len(rest), BATCH_UNITS)]
        batch_s, first_line_ms = batches(port, key, calls)
    finally:
        _common.process_stop(server)
        exposures = decide_bench.stream_take(project_id, since)
    single_rate = (single_n - 10) / single_s
    batch_rate = sum(len(c) for c in calls) / batch_s
    print(f"single decide: {single_n - 10:,} calls in {single_s:.2f} s = {single_rate:,.0f} units/s")
    print(f"batch decide:  {len(calls)} × {BATCH_UNITS:,} units in {batch_s:.2f} s = {batch_rate:,.0f} units/s")
    print(f"first NDJSON line of a batch after {first_line_ms:.0f} ms; {exposures:,} exposures appended and removed")
    figures = {
        "single_units_per_s": round(single_rate, 1),
        "batch_units_per_s": round(batch_rate, 1),
        "batch_vs_single_ratio": round(batch_rate / single_rate, 2),
        "batch_first_line_ms": round(first_line_ms, 1),
        "batch_units_per_call": BATCH_UNITS,
        "exposures_appended": exposures,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
