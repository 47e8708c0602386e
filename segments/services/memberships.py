"""Memberships: who is in which segment, kept current by fold-in and handed to decide."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

import numpy as np
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from personalization import selectors as people
from personalization import services as personalization_services
from segments import meaning
from segments.models import (
    ClusteringRun,
    MapPoint,
    MembershipPublish,
    ProfileEmbedding,
    RunStatus,
    Segment,
    SegmentKind,
    SegmentMembership,
)
from segments.services import meaning as meaning_service
from segments.services.embeddings import embedder_load

PUBLISH_CHUNK = 20_000
# A publish whose heartbeat is older than this was cut short (its worker died); the reaper finishes it.
PUBLISH_STALE_AFTER = timedelta(seconds=60)


def memberships_publish(*, project_id: int, profile_ids: Iterable[int]) -> int:
    """Write each profile's segment keys to decide's unit hash, now. A profile that may not be
    profiled (opted out, consent withdrawn, erased) gets no keys, and its memberships, vector and map
    points are deleted on the way: whatever job put them there before the opt-out committed."""
    wanted = sorted(set(profile_ids))
    if not wanted:
        return 0
    blocked = people.profiles_not_profilable(project_id=project_id, profile_ids=wanted)
    if blocked:
        profiling_data_delete(project_id=project_id, profile_ids=blocked)
    keys: dict[int, list[str]] = {pid: [] for pid in wanted}
    rows = SegmentMembership.objects.filter(segment__project_id=project_id, profile_id__in=wanted)
    for profile_id, key in rows.values_list("profile_id", "segment__key").iterator(chunk_size=20_000):
        keys[profile_id].append(key)
    return personalization_services.unit_segments_publish(project_id=project_id, memberships=keys)


def profiling_data_delete(*, project_id: int, profile_ids: Iterable[int]) -> None:
    """Delete what profiling derived about these profiles: memberships, behavior and meaning vectors,
    map points."""
    ids = list(profile_ids)
    with transaction.atomic():
        rows = SegmentMembership.objects.filter(segment__project_id=project_id, profile_id__in=ids)
        # Segment sizes (shown on cards and in targeting) drop at once, not at the next run or refresh.
        for segment_id, count in rows.values_list("segment_id").annotate(n=Count("id")).values_list("segment_id", "n"):
            Segment.objects.filter(pk=segment_id, size__gte=count).update(size=F("size") - count)
        rows.delete()
        ProfileEmbedding.objects.filter(project_id=project_id, profile_id__in=ids).delete()
        meaning_service.meanings_delete(project_id=project_id, profile_ids=ids)
        MapPoint.objects.filter(run__project_id=project_id, profile_id__in=ids).delete()


def profiles_opted_out_receiver(sender, *, project_id: int, profile_ids: list[int], **kwargs) -> None:
    """Someone may no longer be profiled: out of every segment, map and lookalike, and decide's hash."""
    memberships_publish(project_id=project_id, profile_ids=profile_ids)


def memberships_publish_on_commit(*, project_id: int, profile_ids: Iterable[int]) -> None:
    """Publish these profiles once the caller's transaction commits, through an outbox row written in
    that transaction: a crash after the commit leaves the row for `memberships_publish_resume`."""
    ids = sorted(set(profile_ids))
    if not ids:
        return
    outbox = MembershipPublish.objects.create(project_id=project_id, profile_ids=ids, heartbeat_at=timezone.now())
    transaction.on_commit(lambda: membership_publish_run(publish_id=outbox.pk))


def membership_publish_run(*, publish_id: int) -> int:
    """Publish an outbox row chunk by chunk, recording progress, then delete it. Quiet when the row
    is gone (another worker finished it)."""
    outbox = MembershipPublish.objects.filter(pk=publish_id).first()
    if outbox is None:
        return 0
    ids = outbox.profile_ids
    for start in range(outbox.done, len(ids), PUBLISH_CHUNK):
        memberships_publish(project_id=outbox.project_id, profile_ids=ids[start : start + PUBLISH_CHUNK])
        MembershipPublish.objects.filter(pk=publish_id).update(
            done=min(start + PUBLISH_CHUNK, len(ids)), heartbeat_at=timezone.now()
        )
    MembershipPublish.objects.filter(pk=publish_id).delete()
    return len(ids)


def memberships_publish_resume(*, now: datetime | None = None) -> int:
    """Finish publishes cut short by a crash (no heartbeat for PUBLISH_STALE_AFTER). Returns how many."""
    now = now or timezone.now()
    stale = MembershipPublish.objects.filter(heartbeat_at__lt=now - PUBLISH_STALE_AFTER).order_by("pk")
    count = 0
    for publish_id in stale.values_list("pk", flat=True):
        # Claim it first, so a reaper on another worker leaves it alone for a while.
        claimed = MembershipPublish.objects.filter(pk=publish_id, heartbeat_at__lt=now - PUBLISH_STALE_AFTER).update(
            heartbeat_at=timezone.now()
        )
        if claimed:
            membership_publish_run(publish_id=publish_id)
            count += 1
    return count


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
    ids = list(docs)
    runs = runs_live(project_id=project_id)
    if gone:
        blocked = people.profiles_not_profilable(project_id=project_id, profile_ids=gone)
        SegmentMembership.objects.filter(segment__project_id=project_id, profile_id__in=list(blocked)).delete()
        SegmentMembership.objects.filter(
            segment__project_id=project_id, segment__kind=SegmentKind.BEHAVIOR, profile_id__in=gone
        ).delete()
    rows, meanings = [], None
    for run in runs:
        segments = [s for s in run.segments.all() if s.centroid is not None]
        embedder = embedder_load(project_id=project_id, version=run.embedder_version)
        if not segments or embedder is None or not ids:
            continue
        vectors = embedder.transform([docs[i] for i in ids], now=now)
        centroids = np.asarray([s.centroid for s in segments], dtype=np.float32)
        if run.meaning_weight > 0 and all(s.meaning_centroid is not None for s in segments):
            # Placed as the run placed people: on behavior and meaning (written by the caller just before).
            if meanings is None:
                meanings = meaning_service.meanings_matrix(project_id=project_id, profile_ids=np.array(ids))
            indexes = meaning.nearest_combined(
                vectors,
                meanings,
                run.meaning_weight,
                centroids,
                np.asarray([s.meaning_centroid for s in segments], dtype=np.float32),
                np.array([s.behavior_share for s in segments], dtype=np.float32),
            )
        else:
            indexes = nearest(vectors, centroids)
        SegmentMembership.objects.filter(segment__run=run, profile_id__in=ids).delete()
        for profile_id, index in zip(ids, indexes.tolist(), strict=True):
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
