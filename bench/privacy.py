"""Privacy jobs at scale: export and erasure of one heavy subject among millions of events.

    python bench/privacy.py [--quick] [--rebuild]
        full:    10,000,000 background events (project privacy-bench), subject of 100,000 events
        --quick:  1,000,000 background events (project privacy-bench-quick), same subject size

The background is built once (bench/events_scale.py's builder: 30 days, long-tailed activity) in the
bench database (kairos_bench) and reused. Each run adds subjects with their own profile, two ids,
S events spread over 30 days, three exposures, their decide hashes and ten events still waiting in
the stream, then runs the real jobs (privacy.services.subject_export / subject_erase) on them:

  1. time: export and erasure of a subject with 100,000 events (one run each, caches warm);
  2. baselines in the same run: the floor of reading the subject's events (COPY of their rows to
     nowhere) and of deleting them (one DELETE, rolled back), so the ratios say what the job adds
     (ZIP, JSON and CSV encoding, chunked transactions, verification, certificate);
  3. peak Python memory (tracemalloc) of each job for subjects of S/10 and S events: flat memory
     means rows are streamed, never held.

The project had an erasure before the timed one (as any project after its first): a project's very
first erasure also waits ~1.5 s for decide processes to learn that the project has erased subjects.
The last line of output is one JSON object.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common, events_scale

SUBJECT_EVENTS = 100_000
TARGET_ERASE_S = 5.0
TARGET_EXPORT_S = 15.0

_SUBJECT_EVENTS_SQL = """
INSERT INTO personalization_event
    (project_id, profile_id, event_id, type, ts, session_id, value, properties, received_at)
SELECT %(project)s, %(profile)s, %(tag)s || '-' || g,
       (ARRAY['page_view','page_view','page_view','click','search','add_to_cart','purchase'])[1 + g %% 7],
       %(start)s::timestamptz + g * interval '25 seconds', 's-' || (g / 40),
       CASE WHEN g %% 7 = 6 THEN 19.99 END,
       jsonb_build_object('url', '/products/p' || (g %% 500), 'category', 'shoes'),
       %(start)s::timestamptz + g * interval '25 seconds'
FROM generate_series(1, %(n)s) g
"""


def subject_make(project, tag: str, n: int) -> tuple[int, str]:
    """A person with `n` stored events, exposures, decide hashes and pending events; returns (profile id, user id)."""
    from datetime import UTC, datetime, timedelta

    import orjson
    from django.db import connection

    from personalization import redis_client, rkeys
    from personalization.models import Exposure, Profile, ProfileIdentity

    now = datetime.now(UTC)
    user_id, anon_id = f"bench-user-{tag}", f"bench-anon-{tag}"
    profile = Profile.objects.create(
        project=project,
        external_id=user_id,
        attributes={"email": f"{tag}@example.com", "plan": "pro"},
        first_seen=now - timedelta(days=30),
        last_seen=now,
    )
    ProfileIdentity.objects.bulk_create(
        [
            ProfileIdentity(project=project, profile=profile, kind="user", value=user_id),
            ProfileIdentity(project=project, profile=profile, kind="anon", value=anon_id),
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            _SUBJECT_EVENTS_SQL,
            {"project": project.pk, "profile": profile.pk, "tag": tag, "start": now - timedelta(days=30), "n": n},
        )
    Exposure.objects.bulk_create(
        Exposure(
            project=project,
            profile=profile,
            experience_key=f"exp-{i}",
            variant_key="b",
            reason="bandit",
            exposed_at=now - timedelta(days=i),
        )
        for i in range(3)
    )
    client = redis_client.worker()
    for unit in (user_id, anon_id):
        client.hset(rkeys.unit(project.pk, unit), mapping={"a:exp-0": "b", "attr:plan": "pro", "dnp": "0"})
    pending = [
        {
            "event_id": f"{tag}-p{i}",
            "type": "page_view",
            "user_id": user_id,
            "anonymous_id": None,
            "ts": now.isoformat(),
        }
        for i in range(10)
    ]
    client.xadd(rkeys.EVENTS_STREAM, {"p": project.pk, "d": orjson.dumps(pending), "r": now.isoformat()})
    return profile.pk, user_id


def request_make(project, kind: str, user_id: str):
    from privacy import services
    from privacy.models import RequestStatus

    request = services.dsr_create(
        project_id=project.pk, kind=kind, identifiers={"user_id": user_id}, verification="bench"
    )
    request.status = RequestStatus.PROCESSING
    request.save(update_fields=["status"])
    return request


def run_job(project, kind: str, user_id: str, memory: bool) -> tuple[float, float, object]:
    """(seconds, peak MB traced or 0, result) of one export or erasure job."""
    from privacy import services

    request = request_make(project, kind, user_id)
    job = services.subject_export if kind == "access" else services.subject_erase
    if memory:
        tracemalloc.start()
    began = time.perf_counter()
    result = job(request=request)
    seconds = time.perf_counter() - began
    peak = 0.0
    if memory:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return seconds, peak, result


def baselines(profile_id: int) -> tuple[float, float]:
    """Reading the subject's events once (COPY to nowhere) and deleting them in one statement (rolled back)."""
    from django.db import connection, transaction

    began = time.perf_counter()
    with connection.cursor() as cursor:
        sql = f"COPY (SELECT * FROM personalization_event WHERE profile_id = {int(profile_id)}) TO STDOUT"
        with cursor.cursor.copy(sql) as copy:
            for _ in copy:
                pass
    copy_s = time.perf_counter() - began
    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM personalization_event WHERE profile_id = %s", [profile_id])
        delete_s = time.perf_counter() - began
        transaction.set_rollback(True)
    return copy_s, delete_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000,000 background events")
    parser.add_argument("--rebuild", action="store_true", help="build the background events again")
    args = parser.parse_args()
    n = 1_000_000 if args.quick else 10_000_000
    chunk = 500_000 if args.quick else 2_000_000

    database_url, _ = _common.bench_environment()
    _common.database_ensure(database_url)
    export_dir = tempfile.mkdtemp(prefix="kairos-bench-exports-")
    os.environ["KAIROS_EXPORT_DIR"] = export_dir
    _common.django_setup(migrate=True)

    from django.db import connection

    from personalization import redis_client
    from personalization.models import Event, Project

    slug = "privacy-bench-quick" if args.quick else "privacy-bench"
    project, _ = Project.objects.get_or_create(slug=slug, defaults={"name": f"Privacy bench ({n:,})"})
    redis_client.worker().flushdb()
    # Subjects left by an interrupted run go first: the background is every other event of the project.
    Event.objects.filter(project=project, profile__external_id__isnull=False).delete()
    project.profiles.filter(external_id__isnull=False).delete()
    background = Event.objects.filter(project=project).count()
    if args.rebuild or background != n:
        print(f"building {n:,} background events (once; later runs reuse them)…", flush=True)
        events_scale.build(project, n, chunk, args.rebuild)
        background = n
        project.refresh_from_db()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE personalization_event")
    run = str(int(time.time()))

    # The project's first erasure (waits for decide to see the suppression flag), not timed.
    _, warm_user = subject_make(project, f"{run}-warm", 100)
    run_job(project, "erasure", warm_user, memory=False)

    print(f"\nsubject with {SUBJECT_EVENTS:,} events among {background:,} others")
    profile_id, user = subject_make(project, f"{run}-big", SUBJECT_EVENTS)
    copy_s, delete_s = baselines(profile_id)
    export_s, _, path = run_job(project, "access", user, memory=False)
    zip_mb = Path(path).stat().st_size / 2**20
    erase_s, _, certificate = run_job(project, "erasure", user, memory=False)
    assert certificate["complete"], certificate
    removed = {loc["name"]: loc["removed"] for loc in certificate["locations"]}
    print(f"  export : {export_s:6.2f} s  ({zip_mb:.1f} MB ZIP)   baseline COPY of the rows {copy_s:.2f} s")
    print(f"  erasure: {erase_s:6.2f} s  (removed {removed})")
    print(f"           baseline: one DELETE of the events {delete_s:.2f} s")

    print("\npeak Python memory of each job (tracemalloc), by subject size")
    peaks: dict[str, dict[int, float]] = {"access": {}, "erasure": {}}
    for size in (SUBJECT_EVENTS // 10, SUBJECT_EVENTS):
        for kind in ("access", "erasure"):
            _, user = subject_make(project, f"{run}-{kind}-{size}", size)
            _, peaks[kind][size], _ = run_job(project, kind, user, memory=True)
            print(f"  {kind:8} {size:>8,} events: {peaks[kind][size]:6.1f} MB")
    small, large = SUBJECT_EVENTS // 10, SUBJECT_EVENTS
    for kind in ("access",):  # the export subjects are still there; erase them so runs do not pile up
        request_user = f"bench-user-{run}-{kind}-"
        for size in (small, large):
            run_job(project, "erasure", request_user + str(size), memory=False)
    Path(path).unlink(missing_ok=True)

    figures = {
        "background_events": background,
        "subject_events": SUBJECT_EVENTS,
        "export_s": round(export_s, 3),
        "erase_s": round(erase_s, 3),
        "export_baseline_copy_s": round(copy_s, 3),
        "erase_baseline_delete_s": round(delete_s, 3),
        "export_vs_copy_ratio": round(export_s / copy_s, 2),
        "erase_vs_delete_ratio": round(erase_s / delete_s, 2),
        "export_zip_mb": round(zip_mb, 2),
        "export_peak_mb_small": round(peaks["access"][small], 2),
        "export_peak_mb_large": round(peaks["access"][large], 2),
        "erase_peak_mb_small": round(peaks["erasure"][small], 2),
        "erase_peak_mb_large": round(peaks["erasure"][large], 2),
        "export_memory_growth_ratio": round(peaks["access"][large] / peaks["access"][small], 2),
        "erase_memory_growth_ratio": round(peaks["erasure"][large] / peaks["erasure"][small], 2),
        "erase_within_target": erase_s <= TARGET_ERASE_S,
        "export_within_target": export_s <= TARGET_EXPORT_S,
    }
    print(
        f"\nverdict: erasure {erase_s:.2f} s (target ≤ {TARGET_ERASE_S:.0f} s), export {export_s:.2f} s"
        f" (target ≤ {TARGET_EXPORT_S:.0f} s); memory for 10x the events: export x"
        f"{figures['export_memory_growth_ratio']}, erasure x{figures['erase_memory_growth_ratio']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
