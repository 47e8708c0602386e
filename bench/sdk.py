"""The server SDK: local evaluation cost per call (10 experiences, decide's engine in process) and how
long a snapshot publish takes to reach a KairosClient over server-sent events.

    python bench/sdk.py --quick

Prints the figures and one final JSON line. Targets: local p50 <= 20 us per call, publish -> SDK p95 <= 1 s.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "sdk" / "python")]  # run as a script, like the other benches
from bench import _common  # noqa: E402, I001
from kairos_sdk import KairosClient  # noqa: E402
from kairos_sdk._engine import engine  # noqa: E402


def _snapshot(experiences: int) -> dict:
    """A snapshot as snapshot_compile writes it: fixed splits and bandits, a holdout, one targeted."""
    entries = {}
    for n in range(experiences):
        key = f"exp{n}"
        entries[key] = {
            "key": key,
            "version": 1,
            "salt": f"salt-{n}",
            "policy": "bandit" if n % 2 else "fixed",
            "holdout_share": 0.1 if n % 3 == 0 else 0.0,
            "segment_field": "",
            "targeting": {"attributes": [{"attribute": "plan", "op": "in", "values": ["gold"]}]} if n == 9 else {},
            "conditions": None,
            "goal": "purchase",
            "window_hours": 72,
            "control": "a",
            "order": ["a", "b"],
            "payloads": {"a": {}, "b": {"headline": "B"}},
            "fixed": [0.5, 0.5],
            "weights": {"": [0.3, 0.7]} if n % 2 else {},
        }
    return {"project_id": 1, "version": 1, "holdout": {"salt": "g", "share": 0.05}, "experiences": entries}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def local_evaluation(calls: int) -> dict:
    client = KairosClient("http://127.0.0.1:9", "ks_bench", stream=False, start=False)
    snapshot = _snapshot(10)
    engine.conditions_prepare(snapshot)
    client.snapshot = snapshot
    timings = []
    for n in range(calls):
        unit = f"user-{n % 5000}"  # repeat units: the remembered marks, as a long-running server has
        started = time.perf_counter_ns()
        client.decide(unit, attributes={"plan": "gold"})
        timings.append((time.perf_counter_ns() - started) / 1000)
    return {"local_p50_us": round(_percentile(timings, 0.5), 1), "local_p99_us": round(_percentile(timings, 0.99), 1)}


def publish_to_sdk(changes: int) -> dict:
    database_url, _ = _common.bench_environment()
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)
    from personalization import services
    from personalization.models import Project

    project = services.project_create(name="bench sdk", owner=None, slug=f"bench-sdk-{time.time_ns()}")
    experience = services.experience_create(
        project=project,
        key="hero",
        name="Hero",
        touchpoint="hero",
        variants=[{"key": "a", "is_control": True}, {"key": "b"}],
    )
    services.experience_start(experience=experience)
    _, secret = services.api_key_create(project=Project.objects.get(pk=project.pk), kind="secret", name="bench sdk")
    port = _common.free_port()
    server = _common.server_start(port, workers=1)
    delays = []
    try:
        with KairosClient(f"http://127.0.0.1:{port}", secret, poll_seconds=600) as client:
            for _ in range(changes):
                started = time.monotonic()
                version = services.snapshot_publish(project_id=project.pk)
                if not client.wait_for_version(version, 10):
                    raise SystemExit(f"the SDK did not see version {version} within 10 s")
                delays.append(time.monotonic() - started)
    finally:
        _common.process_stop(server)
    return {
        "publish_to_sdk_p50_s": round(statistics.median(delays), 3),
        "publish_to_sdk_p95_s": round(_percentile(delays, 0.95), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and changes (a minute at most)")
    args = parser.parse_args()
    result = {"experiences": 10, **local_evaluation(20_000 if args.quick else 200_000)}
    result |= publish_to_sdk(10 if args.quick else 50)
    print(f"local evaluation: p50 {result['local_p50_us']} us, p99 {result['local_p99_us']} us per call")
    print(f"publish -> SDK: p50 {result['publish_to_sdk_p50_s']} s, p95 {result['publish_to_sdk_p95_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
