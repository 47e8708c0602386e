"""Clustering runs: k-means over the behavior embeddings, segment cards, the 2-D map.

A run's results (segments, memberships, status "done") are written in one transaction at the end,
so a worker killed mid-run leaves no partial run visible: the run stays "running" with an old
heartbeat, `clustering_runs_resume` queues it again, and the retry starts from scratch.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import redis
from django.contrib.auth.models import AbstractBaseUser
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from personalization import selectors as people
from personalization.segment_keys import behavior_key
from segments import embedding, kmeans, meaning
from segments.models import TEXT_DIMS, ClusteringRun, MapPoint, RunStatus, Segment, SegmentKind, SegmentMembership
from segments.services import embeddings as embeddings_service
from segments.services import meaning as meaning_service
from segments.services.memberships import memberships_publish_on_commit

log = logging.getLogger(__name__)

K_MIN, K_MAX = 2, 40
MAP_POINTS = 3000
STALE_AFTER = timedelta(seconds=90)
MAX_ATTEMPTS = 3
REFIT_AFTER = timedelta(hours=24)


class SegmentsError(ValueError):
    """A user-fixable problem; names the field and the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def clustering_run_request(*, project, k: int | None = None, by: AbstractBaseUser | None = None) -> ClusteringRun:
    """Queue a clustering run; k None means chosen automatically by silhouette on a sample."""
    if k is not None and not K_MIN <= k <= K_MAX:
        raise SegmentsError("k", f"choose a number of segments between {K_MIN} and {K_MAX}, or leave it empty")
    run = ClusteringRun.objects.create(project=project, k_requested=k, created_by=by)
    _enqueue(run.pk)
    return run


def _enqueue(run_id: int) -> None:
    from segments.tasks import clustering_run_task  # circular: tasks imports segments.services

    transaction.on_commit(lambda: clustering_run_task.delay(run_id))


def clustering_runs_resume(*, now=None) -> int:
    """Queue again runs whose worker died (no heartbeat for STALE_AFTER); fail them after MAX_ATTEMPTS."""
    now = now or timezone.now()
    stale = ClusteringRun.objects.filter(
        status__in=[RunStatus.QUEUED, RunStatus.RUNNING], heartbeat_at__lt=now - STALE_AFTER
    )
    count = 0
    for run in stale:
        if run.attempts >= MAX_ATTEMPTS:
            ClusteringRun.objects.filter(pk=run.pk).update(
                status=RunStatus.FAILED, error=f"gave up after {run.attempts} attempts", finished_at=now
            )
            continue
        ClusteringRun.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED, heartbeat_at=now)
        _enqueue(run.pk)
        count += 1
    return count


def _card(centroid_tokens: np.ndarray, overall_tokens: np.ndarray, names: list[str], over: list) -> dict:
    over_index = [{"feature": embedding.token_label(names[c]), "ratio": round(r, 2)} for c, r in over]
    floor = max(float(overall_tokens.max()) * 1e-3, 1e-9)
    more, less = [], []
    for col, name in enumerate(names):
        if not name.startswith(("type:", "dwell:", "scroll:")) or overall_tokens[col] <= floor:
            continue
        ratio = float((centroid_tokens[col] + floor) / (overall_tokens[col] + floor))
        if ratio >= 1.25:
            more.append((ratio, embedding.token_label(name)))
        elif ratio <= 0.8:
            less.append((ratio, embedding.token_label(name)))
    return {
        "over_index": over_index,
        "more": [{"feature": f, "ratio": round(r, 2)} for r, f in sorted(more, reverse=True)[:5]],
        "less": [{"feature": f, "ratio": round(r, 2)} for r, f in sorted(less)[:5]],
    }


def _suggested_name(over: list, names: list[str], taken: Counter) -> str:
    tokens = [names[c] for c, _ in over]
    category = next((t.split(":", 1)[1] for t in tokens if t.startswith("category:")), None)
    search = next((t.split(":", 1)[1] for t in tokens if t.startswith("search:")), None)
    if category:
        name = category.replace("-", " ").capitalize() + (f" · “{search}”" if search else "")
    elif search:
        name = f"Searches “{search}”"
    else:
        name = "Mixed behavior"
    taken[name] += 1
    return name if taken[name] == 1 else f"{name} ({taken[name]})"


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


def _map_points(
    run_id: int, ids: np.ndarray, x: np.ndarray, labels: np.ndarray, seed: int, rows: np.ndarray
) -> list[MapPoint]:
    """A principal-component projection of a sample of the run's people, one row per person; person i's
    vector is x[rows[i]]."""
    if not len(ids):
        return []
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(ids), size=min(MAP_POINTS, len(ids)), replace=False))
    picked = x[rows[take]]
    sample = picked - picked.mean(axis=0)
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    xy = sample @ vt[:2].T
    if xy.shape[1] < 2:  # a sample of one person: a single dot at the origin
        xy = np.zeros((len(take), 2))
    return [
        MapPoint(run_id=run_id, profile_id=int(pid), x=round(float(a), 4), y=round(float(b), 4), index=int(lab))
        for pid, (a, b), lab in zip(ids[take], xy[:, :2], labels[take], strict=True)
    ]


def clustering_run_execute(
    *, run_id: int, seed: int = 0, observe: Callable[[int, str], None] | None = None
) -> ClusteringRun | None:
    """Run a queued clustering run; `observe` also receives each progress step (bench/segments.py times them)."""
    run = ClusteringRun.objects.filter(pk=run_id).first()
    if run is None or run.status == RunStatus.DONE:
        return run  # deleted, or a duplicate delivery after it finished
    started = time.monotonic()
    ClusteringRun.objects.filter(pk=run_id).update(
        status=RunStatus.RUNNING, attempts=F("attempts") + 1, heartbeat_at=timezone.now(), error=""
    )

    def progress(pct: int, label: str) -> None:
        ClusteringRun.objects.filter(pk=run_id).update(progress=pct, progress_label=label, heartbeat_at=timezone.now())
        if observe:
            observe(pct, label)

    try:
        return _execute(run, progress, seed, started)
    except (OperationalError, InterfaceError, redis.RedisError):
        raise  # infrastructure: the task retries, or the reaper queues the run again
    except Exception as exc:
        # A user-fixable problem says how to fix it; anything else fails the run now with a message,
        # rather than leaving it "running" until the reaper gives up on it.
        if isinstance(exc, SegmentsError):
            error = exc.message
        else:
            log.exception("clustering run %s failed", run_id)
            error = (
                f"the run stopped on an unexpected error ({type(exc).__name__}: {str(exc)[:200]}); it is in the"
                " worker's log. Try again; if it happens again, tell your Kairos administrator."
            )
        ClusteringRun.objects.filter(pk=run_id).update(status=RunStatus.FAILED, error=error, finished_at=timezone.now())
        run.refresh_from_db()
        return run


def _execute(run: ClusteringRun, progress, seed: int, started: float) -> ClusteringRun:
    project_id = run.project_id
    now = timezone.now()
    latest = embeddings_service.embedder_latest(project_id=project_id)
    if latest is None or latest.fitted_at < now - REFIT_AFTER:
        latest = embeddings_service.embeddings_refit(project_id=project_id, progress=progress) or latest
    if latest is None:
        raise SegmentsError(
            "k",
            f"not enough behavior yet: clustering needs at least {embeddings_service.MIN_PROFILES_TO_FIT} people"
            f" with {embeddings_service.MIN_EVENTS_FLOOR} or more events",
        )
    progress(30, "Loading embeddings")
    ids, x = embeddings_service.embeddings_matrix(project_id=project_id, version=latest.version)
    if len(ids) < embeddings_service.MIN_PROFILES_TO_FIT:
        raise SegmentsError("k", "not enough embedded people to cluster yet; send more events and try again")
    # With meaning, people are clustered on [behavior, meaning] (segments/meaning.py); cards still read
    # the behavior part, which comes first.
    weight, z = meaning_service.meaning_weight(), x
    if weight > 0:
        # Combined in place in one array: at 1M people a second copy of the meanings would be 2 GB more.
        z = np.zeros((len(ids), x.shape[1] + TEXT_DIMS), dtype=np.float32)
        meaning_service.meanings_matrix(project_id=project_id, profile_ids=ids, out=z[:, x.shape[1] :])
        if z.any():
            z[:, : x.shape[1]] = x
            meaning.combine_in_place(z, x.shape[1], weight)
        else:
            weight, z = 0.0, x  # nobody's events carry text: behavior alone
    if run.k_requested:
        k, scores = min(run.k_requested, len(ids)), {}
    else:
        progress(35, "Choosing the number of segments")
        k, scores = kmeans.k_choose(
            z, seed=seed, progress=lambda i, n: progress(35 + 30 * i // n, f"Choosing k: tried {i} of {n}")
        )
    progress(70, f"Clustering {len(ids):,} people into {k} segments")
    result = kmeans.kmeans_fit(z, k, seed=seed)
    k = len(result.centers)  # fewer when people's behavior has fewer distinct groups than asked for
    parts = [meaning.split_center(center, x.shape[1]) for center in result.centers]
    centroids = np.array([p[0] for p in parts]) if weight > 0 else _unit(result.centers)
    behavior_centers = kmeans.label_means(x, result.labels, k).astype(np.float32)
    progress(85, "Describing segments")
    embedder = embeddings_service.embedder_load(project_id=project_id, version=latest.version)
    names = embedder.feature_names()
    components = embedder.components
    rank = components.shape[0]
    overall_tokens = np.clip(x.mean(axis=0)[:rank] @ components, 0, None)
    centroid_tokens = np.clip(behavior_centers[:, :rank] @ components, 0, None)
    over = kmeans.over_index(centroid_tokens, overall_tokens)
    # Anyone who opted out while this run was computing is left out here; one who opts out between
    # this check and the commit is taken out by the publish after it (memberships_publish).
    blocked = people.profiles_not_profilable(project_id=project_id, profile_ids=ids.tolist())
    if blocked:
        keep = ~np.isin(ids, np.fromiter(blocked, dtype=np.int64, count=len(blocked)))
        ids, labels, rows = ids[keep], result.labels[keep], np.flatnonzero(keep)  # z stays whole: 2 GB at 1M
    else:
        labels, rows = result.labels, np.arange(len(ids))
    clock = people.behavior_clock(project_id=project_id)
    outcomes = people.profiles_outcomes(project_id=project_id, since=clock - timedelta(days=30))
    sizes = np.bincount(labels, minlength=k)
    converted, revenue = np.zeros(k), np.zeros(k)
    if outcomes:
        who = np.fromiter(outcomes, dtype=np.int64, count=len(outcomes))
        goals = np.array([outcomes[int(p)][0] > 0 for p in who], dtype=np.float64)
        values = np.array([outcomes[int(p)][1] for p in who], dtype=np.float64)
        at = np.minimum(np.searchsorted(ids, who), len(ids) - 1)
        member = ids[at] == who  # ids are in order (embeddings_matrix)
        np.add.at(converted, labels[at[member]], goals[member])
        np.add.at(revenue, labels[at[member]], values[member])
    silhouette = None
    if scores:
        silhouette = scores.get(k)
    taken: Counter = Counter()
    map_points = _map_points(run.pk, ids, z, labels, seed, rows)
    progress(90, "Writing segments and publishing them to decide")
    with transaction.atomic():
        Segment.objects.filter(run=run).delete()  # a retry after a crash between here and commit
        MapPoint.objects.filter(run=run).delete()
        segments = []
        for i in range(k):
            suggested = _suggested_name(over[i], names, taken)
            segments.append(
                Segment.objects.create(
                    project_id=project_id,
                    key=behavior_key(run.pk, i),
                    kind=SegmentKind.BEHAVIOR,
                    run=run,
                    index=i,
                    name=suggested,
                    suggested_name=suggested,
                    size=int(sizes[i]),
                    conversion_rate=float(converted[i] / sizes[i]) if sizes[i] else 0.0,
                    value_per_profile=float(revenue[i] / sizes[i]) if sizes[i] else 0.0,
                    card=_card(centroid_tokens[i], overall_tokens, names, over[i]),
                    centroid=centroids[i],
                    meaning_centroid=parts[i][1] if weight > 0 else None,
                    behavior_share=parts[i][2] if weight > 0 else None,
                    created_by=run.created_by,
                )
            )
        _memberships_copy([segments[label].pk for label in labels.tolist()], ids.tolist())
        MapPoint.objects.bulk_create(map_points, batch_size=5000)
        ClusteringRun.objects.filter(pk=run.pk).update(
            status=RunStatus.DONE,
            k=k,
            k_scores={str(key): round(v, 4) for key, v in scores.items()},
            embedder_version=latest.version,
            meaning_weight=weight,
            profiles=len(ids),
            inertia=result.inertia,
            silhouette=silhouette,
            seconds=time.monotonic() - started,
            progress=100,
            progress_label="Done",
            finished_at=timezone.now(),
        )
        memberships_publish_on_commit(project_id=project_id, profile_ids=ids.tolist())
    run.refresh_from_db()
    return run


def _memberships_copy(segment_ids: list[int], profile_ids: list[int]) -> None:
    with connection.cursor() as cursor:
        table = SegmentMembership._meta.db_table
        with cursor.cursor.copy(f"COPY {table} (segment_id, profile_id, score) FROM STDIN") as copy:
            for segment_id, profile_id in zip(segment_ids, profile_ids, strict=True):
                copy.write_row((segment_id, profile_id, 1.0))


def segment_rename(*, segment: Segment, name: str) -> Segment:
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise SegmentsError("name", "give the segment a name of 1 to 120 characters")
    segment.name = name
    segment.save(update_fields=["name"])
    return segment


def clustering_run_delete(*, run: ClusteringRun) -> None:
    """Delete a run with its segments; people's decide hashes are updated to drop its keys."""
    ids = list(SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", flat=True))
    project_id = run.project_id
    with transaction.atomic():
        run.delete()
        memberships_publish_on_commit(project_id=project_id, profile_ids=ids)
