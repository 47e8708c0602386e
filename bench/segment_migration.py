"""Segment migration benchmark: the overlap proposal of the migrate screen on a large project.

    python bench/segment_migration.py [--quick]

1,000,000 profiles (--quick: 100,000) in an old clustering run of 12 segments and a newer run of
12 that re-cuts it (a fifth of the people move to another segment). The migrate screen's proposal
is `segments.selectors.segments_overlap`: one SQL query that counts, over the membership table, the
people each old segment shares with each new one (Jaccard per pair). It is timed (median of 3, the
tables warm) against the baseline an engineer might write first, measured in the same run: fetch both
runs' memberships into Python and build the contingency table with numpy. The two must agree.

Ends with one line of JSON.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common

SLUG = "segment-migration-bench"
K = 12
MOVED = 0.2


def _project_drop() -> None:
    from django.db import connection

    from personalization.models import Profile, Project
    from segments.models import ClusteringRun, Segment, SegmentMembership

    project = Project.objects.filter(slug=SLUG).first()
    if project is None:
        return
    # Plain deletes, child tables first: the ORM's cascade would load a million rows to delete them.
    with connection.cursor() as cursor:
        segments = Segment.objects.filter(project=project).values("pk")
        cursor.execute(f"DELETE FROM {SegmentMembership._meta.db_table} WHERE segment_id IN ({segments.query})")
        Segment.objects.filter(project=project).delete()
        ClusteringRun.objects.filter(project=project).delete()
        cursor.execute(f"DELETE FROM {Profile._meta.db_table} WHERE project_id = %s", [project.pk])
    project.delete()


def seed(n: int) -> tuple[int, list[str], int]:
    """The project, the old run's keys and the new run's id."""
    from django.db import connection
    from django.utils import timezone

    from personalization import services
    from personalization.models import Profile
    from segments.models import ClusteringRun, RunStatus, Segment, SegmentKind, SegmentMembership

    _project_drop()
    project = services.project_create(name="Segment migration bench", slug=SLUG)
    rng = np.random.default_rng(3)
    old_labels = rng.integers(0, K, size=n)
    new_labels = old_labels.copy()
    moved = rng.random(n) < MOVED
    new_labels[moved] = rng.integers(0, K, size=int(moved.sum()))
    now = timezone.now()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        copy_sql = f"COPY {Profile._meta.db_table} (project_id, attributes, consent, do_not_personalize, first_seen, last_seen) FROM STDIN"  # noqa: E501
        with cursor.cursor.copy(copy_sql) as copy:
            for _ in range(n):
                copy.write_row((project.pk, "{}", "{}", False, now, now))
        cursor.execute(f"SELECT id FROM {Profile._meta.db_table} WHERE project_id = %s ORDER BY id", [project.pk])
        ids = np.fromiter((row[0] for row in cursor.fetchall()), dtype=np.int64, count=n)
    segment_ids = {}
    for name, labels in (("old", old_labels), ("new", new_labels)):
        run = ClusteringRun.objects.create(project=project, status=RunStatus.DONE, k=K, profiles=n, finished_at=now)
        sizes = np.bincount(labels, minlength=K)
        rows = Segment.objects.bulk_create(
            Segment(project=project, key=f"{run.key_prefix}{i}", kind=SegmentKind.BEHAVIOR, run=run, index=i,
                    name=f"{name} {i}", size=int(sizes[i]))
            for i in range(K)
        )  # fmt: skip
        segment_ids[name] = (run, [s.pk for s in rows])
        with connection.cursor() as cursor:
            table = SegmentMembership._meta.db_table
            with cursor.cursor.copy(f"COPY {table} (segment_id, profile_id, score) FROM STDIN") as copy:
                pks = segment_ids[name][1]
                for profile_id, label in zip(ids.tolist(), labels.tolist(), strict=True):
                    copy.write_row((pks[label], profile_id, 1.0))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {SegmentMembership._meta.db_table}")
    print(f"  seeded {n:,} profiles and {2 * n:,} memberships in {time.perf_counter() - started:.1f} s", flush=True)
    old_run, _ = segment_ids["old"]
    new_run, _ = segment_ids["new"]
    return project.pk, [f"{old_run.key_prefix}{i}" for i in range(K)], new_run.pk


def _ours(project_id: int, old_keys: list[str], run_id: int) -> dict:
    from segments.selectors import segments_overlap

    return segments_overlap(project_id=project_id, old_keys=old_keys, run_id=run_id)


def _baseline(project_id: int, old_keys: list[str], run_id: int) -> np.ndarray:
    """Fetch every membership of both runs and count pairs in numpy: Jaccard matrix [old, new]."""
    from segments.models import Segment, SegmentMembership

    old_ids = list(
        Segment.objects.filter(project_id=project_id, key__in=old_keys).order_by("index").values_list("pk", flat=True)
    )
    new_ids = list(
        Segment.objects.filter(project_id=project_id, run_id=run_id).order_by("index").values_list("pk", flat=True)
    )

    def labels(segment_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        index = {pk: i for i, pk in enumerate(segment_ids)}
        rows = SegmentMembership.objects.filter(segment_id__in=segment_ids).values_list("profile_id", "segment_id")
        pairs = np.array([(p, index[s]) for p, s in rows.iterator(chunk_size=50_000)], dtype=np.int64)
        return pairs[:, 0], pairs[:, 1]

    old_profiles, old_label = labels(old_ids)
    new_profiles, new_label = labels(new_ids)
    order_old, order_new = np.argsort(old_profiles), np.argsort(new_profiles)
    _, i_old, i_new = np.intersect1d(old_profiles[order_old], new_profiles[order_new], return_indices=True)
    both = np.zeros((len(old_ids), len(new_ids)))
    np.add.at(both, (old_label[order_old][i_old], new_label[order_new][i_new]), 1)
    n_old = np.bincount(old_label, minlength=len(old_ids))[:, None]
    n_new = np.bincount(new_label, minlength=len(new_ids))[None, :]
    return both / (n_old + n_new - both)


def _timed(fn, repeats: int = 3) -> tuple[float, object]:
    fn()  # warm the tables and the plan
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 profiles instead of 1,000,000")
    parser.add_argument("--keep", action="store_true", help="keep the bench project afterwards (to study the query)")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    database_url, _ = _common.bench_environment()
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)

    print(f"segment migration bench: {n:,} profiles, two runs of {K} segments, {MOVED:.0%} re-cut", flush=True)
    project_id, old_keys, run_id = seed(n)
    ours_s, proposal = _timed(lambda: _ours(project_id, old_keys, run_id))
    base_s, matrix = _timed(lambda: _baseline(project_id, old_keys, run_id))
    ours = np.array(
        [[row["jaccard"] for row in sorted(proposal[key], key=lambda r: r["segment"].index)] for key in old_keys]
    )
    agree = bool(np.allclose(ours, matrix))
    best_right = sum(proposal[key][0]["segment"].index == i for i, key in enumerate(old_keys))
    print(f"  overlap proposal (one SQL query)   {ours_s * 1000:8.0f} ms")
    print(f"  baseline (fetch + numpy)           {base_s * 1000:8.0f} ms")
    print(f"  ratio: the proposal takes {ours_s / base_s:.2f}x the baseline's time; results agree: {agree}")
    print(f"  best match is the segment people came from for {best_right} of {K} old segments")
    if not args.keep:
        _project_drop()
    print(
        json.dumps(
            {
                "bench": "segment_migration",
                "profiles": n,
                "segments_per_run": K,
                "overlap_proposal_ms": round(ours_s * 1000, 1),
                "overlap_baseline_numpy_ms": round(base_s * 1000, 1),
                "overlap_time_ratio": round(ours_s / base_s, 3),
                "overlap_results_agree": agree,
                "best_match_correct": best_right,
            }
        )
    )


if __name__ == "__main__":
    main()
