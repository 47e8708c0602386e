"""Meaning vectors in the worker: texts encoded once (cached by digest), profiles' vectors written.

Runs only where behavior vectors are made (the refit and the fold-in, both Celery work): never in
decide, never in the events request. The encoder runs on this machine (segments/text_encoder.py);
no text leaves it. People who may not be profiled never reach here: their events are not read
(personalization's selectors leave them out) and their rows are deleted by the fold-in and by
`profiling_data_delete`.
"""

from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils import timezone

from segments import meaning, text_encoder
from segments.embedding import BehaviorEvent
from segments.models import TEXT_DIMS, ProfileMeaning, TextEmbedding
from segments.services import vector_io

ENCODE_BATCH = 256
LOOKUP_BATCH = 5_000


def meaning_weight() -> float:
    """The share of meaning in the similarity clustering runs use (a setting)."""
    return float(settings.SEGMENTS_MEANING_WEIGHT)


def lookalike_meaning_weight() -> float:
    """The share of meaning in the similarity lookalikes use (a setting of its own, off by default)."""
    return float(settings.SEGMENTS_LOOKALIKE_MEANING_WEIGHT)


def text_vectors(
    *,
    texts: Sequence[str],
    encoder: text_encoder.TextEncoder | None = None,
    known: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Normalised text → its vector: from the cache where it is there, else encoded in batches and
    stored (a concurrent worker storing the same text first is harmless: same vector, conflict ignored).
    `known`, when given, holds vectors already looked up (a refit's earlier batches: queries repeat
    across people) and receives the ones found here."""
    encoder = encoder or text_encoder.encoder_load()
    known = {} if known is None else known
    found: dict[str, np.ndarray] = {t: known[t] for t in dict.fromkeys(texts) if t in known}
    by_digest = {text_encoder.text_digest(t): t for t in dict.fromkeys(texts) if t not in found}
    digests = list(by_digest)
    for start in range(0, len(digests), LOOKUP_BATCH):
        rows = TextEmbedding.objects.filter(encoder=encoder.name, digest__in=digests[start : start + LOOKUP_BATCH])
        for digest, vector in rows.values_list("digest", "vector"):
            found[by_digest[bytes(digest)]] = np.asarray(vector, dtype=np.float32)
    missing = [d for d in digests if by_digest[d] not in found]
    now = timezone.now()
    for start in range(0, len(missing), ENCODE_BATCH):
        batch = missing[start : start + ENCODE_BATCH]
        vectors = encoder.encode([by_digest[d] for d in batch])
        TextEmbedding.objects.bulk_create(
            [
                TextEmbedding(encoder=encoder.name, digest=d, vector=v, created_at=now)
                for d, v in zip(batch, vectors, strict=True)
            ],
            ignore_conflicts=True,
        )
        found.update({by_digest[d]: v for d, v in zip(batch, vectors, strict=True)})
    known.update(found)
    return found


def meanings_compute(
    *, docs: Sequence[Sequence[BehaviorEvent]], half_life_days: float, known: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, list[int], str]:
    """(meaning vectors, texts per profile, encoder name) of these profiles' events; rows of zeros for
    profiles whose events carry no text. Call outside a transaction: encoding new texts takes time.
    `known`: see text_vectors."""
    weights = [meaning.profile_texts(doc, half_life_days=half_life_days) for doc in docs]
    encoder = text_encoder.encoder_load()
    vectors = text_vectors(texts=[t for w in weights for t in w], encoder=encoder, known=known)
    return meaning.meaning_matrix(weights, vectors, encoder.dims), [len(w) for w in weights], encoder.name


def meanings_write(
    *, project_id: int, profile_ids: Sequence[int], vectors: np.ndarray, texts: Sequence[int], encoder: str
) -> int:
    """Replace these profiles' meaning vectors (COPY; the caller holds the transaction). A profile with
    no text gets no row. Returns the rows written."""
    now = timezone.now()
    ProfileMeaning.objects.filter(project_id=project_id, profile_id__in=list(profile_ids)).delete()
    written = 0
    with connection.cursor() as cursor:
        table = ProfileMeaning._meta.db_table
        with cursor.cursor.copy(
            f"COPY {table} (project_id, profile_id, encoder, vector, texts, updated_at) FROM STDIN"
        ) as copy:
            for profile_id, vector, count in zip(profile_ids, vectors, texts, strict=True):
                if count and np.any(vector):
                    copy.write_row((project_id, profile_id, encoder, meaning.vector_text(vector), count, now))
                    written += 1
    return written


def meanings_delete(*, project_id: int, profile_ids: Sequence[int] | None = None) -> None:
    """Delete these profiles' meaning vectors (None: the whole project's, before a refit rewrites them)."""
    rows = ProfileMeaning.objects.filter(project_id=project_id)
    if profile_ids is not None:
        rows = rows.filter(profile_id__in=list(profile_ids))
    rows.delete()


# Up to this many profiles, their meaning rows are read by id; more, the project's rows page by page.
BY_ID_AT_MOST = 10_000


def meanings_matrix(*, project_id: int, profile_ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The meaning vectors of these profiles, in their order; zeros for a profile without one. Written
    into `out` when given (a view into a larger array: a clustering run's combined vectors)."""
    if out is None:
        out = np.zeros((len(profile_ids), TEXT_DIMS), dtype=np.float32)
    if not len(profile_ids):
        return out
    order = np.argsort(profile_ids, kind="stable")
    ordered = profile_ids[order]
    where, params = "project_id = %s AND encoder = %s", [project_id, text_encoder.DEFAULT_ENCODER]
    if len(profile_ids) <= BY_ID_AT_MOST:
        where, params = where + " AND profile_id = ANY(%s)", [*params, profile_ids.tolist()]
    table = ProfileMeaning._meta.db_table
    for ids, vectors in vector_io.vector_pages(table=table, where=where, params=params, dims=TEXT_DIMS):
        at = np.minimum(np.searchsorted(ordered, ids), len(ordered) - 1)
        wanted = ordered[at] == ids
        out[order[at[wanted]]] = vectors[wanted]
    return out
