"""Behavior embeddings: the nightly refit of the embedder and the fold-in of profiles with new events.

Profiles and events are read through personalization's selectors, which leave out anyone who may not
be profiled; such a profile's vector and memberships are deleted the next time it is folded in.
"""

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from personalization import selectors as people
from segments import embedding, meaning, text_encoder
from segments.models import TEXT_DIMS, EmbedderVersion, ProfileEmbedding
from segments.services import meaning as meaning_service
from segments.services import vector_io

log = logging.getLogger(__name__)

WINDOW_DAYS = 30
# Longer windows tried in turn when the last 30 days hold under half of the people (history imported
# from elsewhere: a ratings dataset spanning years had 6 of 671 people in its last 30 days).
WIDER_WINDOWS_DAYS = (90, 365)
# Fewer events than this is not enough behavior to place a person (measured on the demo: profiles
# with 1–4 events are right about half the time; from 5 on, clusters recover the planted intents).
MIN_EVENTS = 5
# Lowered this far, never below, when under half of the people reach MIN_EVENTS (sparse purchase panels).
MIN_EVENTS_FLOOR = 3
# Each person's latest events, whatever the window: a long history is not a heavier vector.
LAST_EVENTS = 500
MIN_PROFILES_TO_FIT = 20
# The basis (vocabulary, idf, SVD) is fitted on this many people at most: at 50,000 the tokens that
# matter are all seen, and the fit's memory does not grow with the project.
FIT_SAMPLE = 50_000
# People read, projected and staged per step of a refit.
REFIT_BATCH = 10_000


def _eligible(counts: dict[int, int], min_events: int) -> int:
    return sum(count for n, count in counts.items() if n >= min_events)


def embedding_window(*, project_id: int, now: datetime) -> dict:
    """Which behavior is embedded: the window, the minimum of events, the recency half-life, and who
    is left out and why. The window is the shortest of 30 days, 90, 365 or the project's whole history
    holding at least half of the people with behavior; the half-life grows with it (14 days per 30)."""
    first = people.behavior_first(project_id=project_id) or now
    span_days = max(WINDOW_DAYS, math.ceil((now - first).total_seconds() / 86400) + 1)
    everyone = people.profiles_behavior_counts(project_id=project_id, since=first)
    total = sum(everyone.values())
    window, counts = span_days, everyone
    for days in (WINDOW_DAYS, *WIDER_WINDOWS_DAYS):
        if days >= span_days:
            break
        in_window = people.profiles_behavior_counts(project_id=project_id, since=now - timedelta(days=days))
        if 2 * _eligible(in_window, MIN_EVENTS_FLOOR) >= _eligible(everyone, MIN_EVENTS_FLOOR):
            window, counts = days, in_window
            break
    min_events = MIN_EVENTS
    while min_events > MIN_EVENTS_FLOOR and 2 * _eligible(counts, min_events) < sum(counts.values()):
        min_events -= 1
    in_window = sum(counts.values())
    return {
        "window_days": window,
        "min_events": min_events,
        "last_events": LAST_EVENTS,
        "half_life_days": embedding.HALF_LIFE_DAYS * window / WINDOW_DAYS,
        "people_with_behavior": total,
        "eligible": _eligible(counts, min_events),
        "left_out": {"fewer_events": in_window - _eligible(counts, min_events), "outside_window": total - in_window},
    }


def _behavior_events(rows: list[tuple]) -> list[embedding.BehaviorEvent]:
    return [embedding.BehaviorEvent(etype, ts, props, value) for etype, ts, props, value in rows]


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
                copy.write_row((project_id, profile_id, version, meaning.vector_text(vector), count, now))


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


def _docs_read(rows: Iterable[tuple[int, list[tuple]]]) -> tuple[list[int], list[list[embedding.BehaviorEvent]]]:
    ids, docs = [], []
    for profile_id, events in rows:
        ids.append(profile_id)
        docs.append(_behavior_events(events))
    return ids, docs


def _batches(rows: Iterable[tuple[int, list[tuple]]], size: int) -> Iterator[tuple[list[int], list]]:
    batch: list[tuple[int, list[tuple]]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield _docs_read(batch)
            batch = []
    if batch:
        yield _docs_read(batch)


def embeddings_refit(
    *, project_id: int, now: datetime | None = None, progress: Callable[[int, str], None] | None = None
) -> EmbedderVersion | None:
    """Fit a new embedder on the project's recent behavior and re-embed everyone with it.

    Streams: the basis is fitted on a sample of FIT_SAMPLE people (everyone in a smaller project), then
    everyone's events are read REFIT_BATCH people at a time, projected, given their meaning and staged
    (segments/services/vector_io.py); the new version and its vectors replace the old in one short
    transaction at the end. Memory is the sample's plus one batch's, whatever the number of people.

    Returns None when fewer than MIN_PROFILES_TO_FIT people have enough behavior.
    """
    now = now or people.behavior_clock(project_id=project_id)
    progress = progress or (lambda pct, label: None)
    progress(2, "Reading recent behavior")
    coverage = embedding_window(project_id=project_id, now=now)
    read = {
        "project_id": project_id,
        "since": now - timedelta(days=coverage["window_days"]),
        "min_events": coverage["min_events"],
        "last_events": coverage["last_events"],
    }
    eligible = people.profiles_behavior_ids(project_id=project_id, since=read["since"], min_events=read["min_events"])
    if len(eligible) < MIN_PROFILES_TO_FIT:
        return None
    everyone = len(eligible) <= FIT_SAMPLE
    if not everyone:
        eligible = np.random.default_rng(0).choice(np.array(eligible), size=FIT_SAMPLE, replace=False).tolist()
    progress(10, f"Fitting the embedder on {len(eligible):,} people")
    sample_ids, sample_docs = _docs_read(people.profiles_behavior(**read, profile_ids=eligible))
    if len(sample_ids) < MIN_PROFILES_TO_FIT:
        return None  # people opted out between the two reads
    embedder = embedding.TfidfSvdEmbedder(half_life_days=coverage["half_life_days"])
    sample_vectors = embedder.fit(sample_docs, now=now)
    half_life = coverage["half_life_days"]
    known: dict[str, np.ndarray] = {}  # texts' vectors looked up so far: queries repeat across people
    stage = vector_io.RefitStage(project_id=project_id, behavior_dims=embedder.dims, meaning_dims=TEXT_DIMS)
    try:
        if everyone:
            batches = iter([(sample_ids, sample_docs)])
        else:
            del sample_docs, sample_vectors
            batches = _batches(people.profiles_behavior(**read), REFIT_BATCH)
        written, encoder = [], text_encoder.DEFAULT_ENCODER
        for batch_no, (ids, docs) in enumerate(batches, start=1):
            vectors = sample_vectors if everyone else embedder.transform(docs, now=now)
            meanings, texts, encoder = meaning_service.meanings_compute(
                docs=docs, half_life_days=half_life, known=known
            )
            stage.append(
                profile_ids=np.array(ids, dtype=np.int64),
                vectors=vectors,
                events=np.array([len(d) for d in docs], dtype=np.int32),
                meanings=meanings,
                texts=np.array(texts, dtype=np.int32),
            )
            written.extend(ids)
            progress(min(12 + batch_no, 24), f"Embedded {len(written):,} people")
        progress(25, "Storing vectors")
        blocked = people.profiles_not_profilable(project_id=project_id, profile_ids=written)
        with transaction.atomic():
            latest = embedder_latest(project_id=project_id)
            row = EmbedderVersion.objects.create(
                project_id=project_id,
                kind=embedder.kind,
                version=(latest.version + 1) if latest else 1,
                state=embedder.to_bytes(),
                dims=embedder.dims,
                profiles=len(written) - len(blocked),
                features=len(embedder.vocabulary),
                fitted_at=now,
                coverage=coverage | {"eligible": len(written) - len(blocked), "fitted_on": len(sample_ids)},
            )
            # Everyone's meaning is rewritten with their behavior: people no longer eligible lose both.
            stage.swap(version=row.version, encoder=encoder, blocked=blocked, updated_at=timezone.now())
    finally:
        stage.drop()
    return row


def embeddings_fold_in(*, project_id: int, profile_ids: Iterable[int], now: datetime | None = None) -> dict:
    """Project these profiles onto the current basis and move them to their nearest segment of every
    live clustering run; publishes their memberships to decide. Returns {"embedded", "removed"}."""
    from segments.services.memberships import memberships_reassign  # circular: memberships imports this module

    now = now or people.behavior_clock(project_id=project_id)
    wanted = sorted(set(profile_ids))
    latest = embedder_latest(project_id=project_id)
    if latest is None or not wanted:
        return {"embedded": 0, "removed": 0}
    ids, docs = [], []
    window = latest.coverage or {}
    for profile_id, rows in people.profiles_behavior(
        project_id=project_id,
        since=now - timedelta(days=window.get("window_days", WINDOW_DAYS)),
        profile_ids=wanted,
        min_events=window.get("min_events", MIN_EVENTS),
        last_events=window.get("last_events"),
    ):
        ids.append(profile_id)
        docs.append(_behavior_events(rows))
    # Opted out, consent withdrawn or not enough behavior (any more): no vector, no segment.
    gone = sorted(set(wanted) - set(ids))
    if ids:
        meanings, texts, encoder = meaning_service.meanings_compute(
            docs=docs, half_life_days=window.get("half_life_days", embedding.HALF_LIFE_DAYS)
        )
    with transaction.atomic():
        if gone:
            ProfileEmbedding.objects.filter(project_id=project_id, profile_id__in=gone).delete()
            meaning_service.meanings_delete(project_id=project_id, profile_ids=gone)
        if ids:
            vectors = embedder_load(project_id=project_id, version=latest.version).transform(docs, now=now)
            embeddings_write(
                project_id=project_id,
                version=latest.version,
                profile_ids=ids,
                vectors=vectors,
                events=[len(d) for d in docs],
            )
            meaning_service.meanings_write(
                project_id=project_id, profile_ids=ids, vectors=meanings, texts=texts, encoder=encoder
            )
        memberships_reassign(project_id=project_id, docs=dict(zip(ids, docs, strict=True)), gone=gone, now=now)
    return {"embedded": len(ids), "removed": len(gone)}


def embeddings_matrix(*, project_id: int, version: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(profile ids in order, vectors) of every embedded, profilable profile of the project."""
    where, params = "project_id = %s", [project_id]
    if version is not None:
        where, params = where + " AND embedder_version = %s", [project_id, version]
    table = ProfileEmbedding._meta.db_table
    pages = list(vector_io.vector_pages(table=table, where=where, params=params, dims=embedding.DIMS))
    if not pages:
        return np.zeros(0, dtype=np.int64), np.zeros((0, embedding.DIMS), dtype=np.float32)
    ids_array = np.concatenate([p[0] for p in pages])
    matrix = np.concatenate([p[1] for p in pages])
    del pages
    blocked = people.profiles_not_profilable(project_id=project_id, profile_ids=ids_array.tolist())
    if blocked:
        keep = ~np.isin(ids_array, np.fromiter(blocked, dtype=np.int64))
        ids_array, matrix = ids_array[keep], matrix[keep]
    # A stitched profile may briefly have two rows; keep one.
    _, first = np.unique(ids_array, return_index=True)
    if len(first) < len(ids_array):
        ids_array, matrix = ids_array[first], matrix[first]
    return ids_array, matrix
