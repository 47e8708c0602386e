"""Behavior embeddings: the nightly refit of the embedder and the fold-in of profiles with new events.

Profiles and events are read through personalization's selectors, which leave out anyone who may not
be profiled; such a profile's vector and memberships are deleted the next time it is folded in.
"""

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from personalization import selectors_segments as people
from segments import embedding
from segments.models import EmbedderVersion, ProfileEmbedding

log = logging.getLogger(__name__)

WINDOW_DAYS = 30
# Fewer events than this is not enough behavior to place a person (measured on the demo: profiles
# with 1–4 events are right about half the time; from 5 on, clusters recover the planted intents).
MIN_EVENTS = 5
MIN_PROFILES_TO_FIT = 20


def _behavior_events(rows: list[tuple]) -> list[embedding.BehaviorEvent]:
    return [embedding.BehaviorEvent(etype, ts, props, value) for etype, ts, props, value in rows]


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{v:.6g}" for v in vector.tolist()) + "]"


def embeddings_write(*, project_id: int, version: int, profile_ids: list[int], vectors: np.ndarray, events: list[int]):
    """Replace these profiles' vectors (COPY into the table; the caller holds the transaction)."""
    now = timezone.now()
    ProfileEmbedding.objects.filter(project_id=project_id, profile_id__in=profile_ids).delete()
    with connection.cursor() as cursor:
        table = ProfileEmbedding._meta.db_table
        with cursor.cursor.copy(
            f"COPY {table} (project_id, profile_id, embedder_version, vector, events, updated_at) FROM STDIN"
        ) as copy:
            for profile_id, vector, count in zip(profile_ids, vectors, events, strict=True):
                copy.write_row((project_id, profile_id, version, _vector_text(vector), count, now))


def embedder_latest(*, project_id: int) -> EmbedderVersion | None:
    return EmbedderVersion.objects.filter(project_id=project_id).order_by("-version").first()


@lru_cache(maxsize=16)
def _embedder_loaded(embedder_id: int) -> embedding.Embedder:
    row = EmbedderVersion.objects.get(pk=embedder_id)
    return embedding.embedder_load(row.kind, bytes(row.state))


def embedder_load(*, project_id: int, version: int) -> embedding.Embedder | None:
    """A fitted embedder (cached per process: a stored version never changes)."""
    row = EmbedderVersion.objects.filter(project_id=project_id, version=version).values_list("pk", flat=True).first()
    return _embedder_loaded(row) if row else None


def embeddings_refit(
    *, project_id: int, now: datetime | None = None, progress: Callable[[int, str], None] | None = None
) -> EmbedderVersion | None:
    """Fit a new embedder on the project's recent behavior and re-embed everyone with it.

    Returns None when fewer than MIN_PROFILES_TO_FIT people have enough behavior.
    """
    now = now or people.behavior_clock(project_id=project_id)
    progress = progress or (lambda pct, label: None)
    progress(2, "Reading recent behavior")
    ids, docs = [], []
    for profile_id, rows in people.profiles_behavior(
        project_id=project_id, since=now - timedelta(days=WINDOW_DAYS), min_events=MIN_EVENTS
    ):
        ids.append(profile_id)
        docs.append(_behavior_events(rows))
    if len(ids) < MIN_PROFILES_TO_FIT:
        return None
    progress(15, f"Fitting the embedder on {len(ids):,} people")
    embedder = embedding.TfidfSvdEmbedder()
    vectors = embedder.fit(docs, now=now)
    progress(25, "Storing vectors")
    with transaction.atomic():
        latest = embedder_latest(project_id=project_id)
        row = EmbedderVersion.objects.create(
            project_id=project_id,
            kind=embedder.kind,
            version=(latest.version + 1) if latest else 1,
            state=embedder.to_bytes(),
            dims=embedder.dims,
            profiles=len(ids),
            features=len(embedder.vocabulary),
            fitted_at=now,
        )
        ProfileEmbedding.objects.filter(project_id=project_id).delete()
        embeddings_write(
            project_id=project_id, version=row.version, profile_ids=ids, vectors=vectors, events=[len(d) for d in docs]
        )
    return row


def embeddings_fold_in(*, project_id: int, profile_ids: Iterable[int], now: datetime | None = None) -> dict:
    """Project these profiles onto the current basis and move them to their nearest segment of every
    live clustering run; publishes their memberships to decide. Returns {"embedded", "removed"}."""
    from segments.services.memberships import memberships_reassign

    now = now or people.behavior_clock(project_id=project_id)
    wanted = sorted(set(profile_ids))
    latest = embedder_latest(project_id=project_id)
    if latest is None or not wanted:
        return {"embedded": 0, "removed": 0}
    ids, docs = [], []
    for profile_id, rows in people.profiles_behavior(
        project_id=project_id,
        since=now - timedelta(days=WINDOW_DAYS),
        profile_ids=wanted,
        min_events=MIN_EVENTS,
    ):
        ids.append(profile_id)
        docs.append(_behavior_events(rows))
    # Opted out, consent withdrawn or not enough behavior (any more): no vector, no segment.
    gone = sorted(set(wanted) - set(ids))
    with transaction.atomic():
        if gone:
            ProfileEmbedding.objects.filter(project_id=project_id, profile_id__in=gone).delete()
        if ids:
            vectors = embedder_load(project_id=project_id, version=latest.version).transform(docs, now=now)
            embeddings_write(
                project_id=project_id,
                version=latest.version,
                profile_ids=ids,
                vectors=vectors,
                events=[len(d) for d in docs],
            )
        memberships_reassign(project_id=project_id, docs=dict(zip(ids, docs, strict=True)), gone=gone, now=now)
    return {"embedded": len(ids), "removed": len(gone)}


def embeddings_matrix(*, project_id: int, version: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(profile ids, vectors) of every embedded, profilable profile of the project."""
    rows = ProfileEmbedding.objects.filter(project_id=project_id)
    if version is not None:
        rows = rows.filter(embedder_version=version)
    ids, vectors = [], []
    for profile_id, vector in rows.values_list("profile_id", "vector").iterator(chunk_size=20_000):
        ids.append(profile_id)
        vectors.append(vector)
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, embedding.DIMS), dtype=np.float32)
    ids_array = np.array(ids, dtype=np.int64)
    matrix = np.asarray(vectors, dtype=np.float32)
    blocked = people.profiles_not_profilable(project_id=project_id, profile_ids=ids)
    if blocked:
        keep = ~np.isin(ids_array, np.fromiter(blocked, dtype=np.int64))
        ids_array, matrix = ids_array[keep], matrix[keep]
    # A stitched profile may briefly have two rows; keep one.
    _, first = np.unique(ids_array, return_index=True)
    return ids_array[first], matrix[first]
