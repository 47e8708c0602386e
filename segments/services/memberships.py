"""Memberships: who is in which segment, kept current by fold-in and handed to decide."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

import numpy as np
from django.db import transaction

from personalization import selectors_segments as people
from personalization import services as personalization_services
from segments.models import ClusteringRun, RunStatus, Segment, SegmentKind, SegmentMembership


def memberships_publish(*, project_id: int, profile_ids: Iterable[int]) -> int:
    """Write each profile's segment keys to decide's unit hash (after the transaction commits)."""
    wanted = sorted(set(profile_ids))
    if not wanted:
        return 0
    keys: dict[int, list[str]] = {pid: [] for pid in wanted}
    rows = SegmentMembership.objects.filter(segment__project_id=project_id, profile_id__in=wanted)
    for profile_id, key in rows.values_list("profile_id", "segment__key").iterator(chunk_size=20_000):
        keys[profile_id].append(key)
    return personalization_services.unit_segments_publish(project_id=project_id, memberships=keys)


def memberships_publish_on_commit(*, project_id: int, profile_ids: Iterable[int]) -> None:
    ids = list(profile_ids)
    transaction.on_commit(lambda: memberships_publish(project_id=project_id, profile_ids=ids))


def runs_live(*, project_id: int) -> list[ClusteringRun]:
    """Finished runs: their segments stay targetable and keep following people's behavior."""
    return list(ClusteringRun.objects.filter(project_id=project_id, status=RunStatus.DONE).prefetch_related("segments"))


def nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (cosine: vectors are unit length) for each row."""
    return np.argmax(vectors @ centroids.T, axis=1)


def memberships_reassign(*, project_id: int, docs: dict[int, list], gone: list[int], now: datetime) -> None:
    """Move folded-in profiles to their nearest segment in every live run, each run with the basis it
    was clustered on; take profiles without enough behavior out of behavior segments, and profiles
    that may not be profiled out of every segment. The caller holds the transaction."""
    from segments.services.embeddings import embedder_load

    ids = list(docs)
    runs = runs_live(project_id=project_id)
    if gone:
        blocked = people.profiles_not_profilable(project_id=project_id, profile_ids=gone)
        SegmentMembership.objects.filter(segment__project_id=project_id, profile_id__in=list(blocked)).delete()
        SegmentMembership.objects.filter(
            segment__project_id=project_id, segment__kind=SegmentKind.BEHAVIOR, profile_id__in=gone
        ).delete()
    rows = []
    for run in runs:
        segments = [s for s in run.segments.all() if s.centroid is not None]
        embedder = embedder_load(project_id=project_id, version=run.embedder_version)
        if not segments or embedder is None or not ids:
            continue
        vectors = embedder.transform([docs[i] for i in ids], now=now)
        centroids = np.asarray([s.centroid for s in segments], dtype=np.float32)
        SegmentMembership.objects.filter(segment__run=run, profile_id__in=ids).delete()
        for profile_id, index in zip(ids, nearest(vectors, centroids).tolist(), strict=True):
            rows.append(SegmentMembership(segment=segments[index], profile_id=profile_id))
    SegmentMembership.objects.bulk_create(rows, batch_size=5000)
    if runs or gone:
        memberships_publish_on_commit(project_id=project_id, profile_ids=[*ids, *gone])


def segments_targetable(*, project_id: int) -> list[Segment]:
    return list(
        Segment.objects.filter(project_id=project_id)
        .exclude(run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED])
        .select_related("run")
        .order_by("kind", "run_id", "index", "name")
    )


def memberships_by_segment(*, segment_ids: Iterable[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    rows = SegmentMembership.objects.filter(segment_id__in=list(segment_ids)).values_list("segment_id", "profile_id")
    for segment_id, profile_id in rows.iterator(chunk_size=20_000):
        out[segment_id].append(profile_id)
    return out
