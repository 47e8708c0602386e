"""Meaning vectors: what a profile's words are about, beside how it behaves. Pure numpy, no Django.

A profile's texts are the words its events carry: search queries, page titles, product and category
names (found by property name, as the behavior tokens are). Each text counts with the recency weight
of its event (the same half-life, counted back from the person's latest event, as behavior tokens)
times the weight of its role (NAME_WEIGHT for names); the meaning vector is the unit length weighted
mean of the texts' encoder vectors.

The behavior vector and the meaning vector are combined by concatenation, each part scaled so that
the cosine of two combined vectors is (1 − w) × behavior cosine + w × meaning cosine, where w is the
meaning weight. A profile without texts keeps its behavior vector alone (a zero meaning part).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from segments.embedding import _CATEGORY_KEYS, _ITEM_KEYS, _QUERY_KEYS, BehaviorEvent, _norm_key
from segments.text_encoder import text_normalise

_TITLE_KEYS = frozenset({"title", "pagetitle", "documenttitle", "headline"})
_NAME_KEYS = frozenset({"name", "productname", "itemname", "categoryname"})
# Names of categories and products count a tenth of free text: behavior tokens already compare them by
# identity, and in a shop whose names all share one domain they pull everyone's meaning together. On the
# demo, meaning from queries alone raised the ARI over behavior (0.837 → 0.862 at weight 0.3), names at
# full weight lowered it (0.822); at a tenth, 0.852 and everyone has a meaning vector (not 68 %).
NAME_WEIGHT = 0.1
# A text needs a letter; ids ("123", "a1b2c3d4e5f6…") and codes mean nothing to an encoder.
_LETTERS = re.compile(r"[^\W\d_]{2,}")
_ID_LIKE = re.compile(r"^[0-9a-f-]{12,}$")
_SEPARATORS = re.compile(r"[-_./>|+]+")
MAX_TEXTS_PER_EVENT = 8
# Only this many of a person's texts, the heaviest (most recent and repeated) first: enough to say
# what they are about, and a bound on the work per person.
MAX_TEXTS_PER_PROFILE = 64


def _readable(value: object) -> str | None:
    """A property value as text an encoder can read: "trail-shoes" → "trail shoes"; None for ids."""
    if not isinstance(value, str):
        return None
    return _readable_text(value)


@lru_cache(maxsize=16384)
def _readable_text(value: str) -> str | None:
    # Cached: the same names come back event after event (a genre, a category, a product), and reading
    # one took three regular expressions and a normalisation: a third of the texts' share of a refit.
    text = value.strip()
    if not text or "://" in text or _ID_LIKE.match(text.lower()) or not _LETTERS.search(text):
        return None
    return text_normalise(_SEPARATORS.sub(" ", text))


def event_texts(properties: Mapping) -> list[tuple[str, float]]:
    """The texts of one event's properties with the weight of their role: free text (queries, titles)
    1, names of categories and products NAME_WEIGHT."""
    texts: dict[str, float] = {}

    def add(value: object, role: float) -> None:
        for single in value[:20] if isinstance(value, list) else [value]:
            if isinstance(single, Mapping):
                for key, inner in list(single.items())[:20]:
                    norm = _norm_key(key)
                    if norm in _NAME_KEYS or norm in _CATEGORY_KEYS:
                        add(inner, NAME_WEIGHT)
            elif (text := _readable(single)) is not None:
                texts[text] = max(texts.get(text, 0.0), role)

    for key, value in list(properties.items())[:50] if isinstance(properties, Mapping) else []:
        norm = _norm_key(key)
        if norm in _QUERY_KEYS or norm in _TITLE_KEYS:
            add(value, 1.0)
        elif norm in _NAME_KEYS or norm in _CATEGORY_KEYS or norm in _ITEM_KEYS:
            add(value, NAME_WEIGHT)  # a category path reads as words: "footwear.trail-shoes" → "footwear trail shoes"
    return list(texts.items())[:MAX_TEXTS_PER_EVENT]


def profile_texts(events: Iterable[BehaviorEvent], *, half_life_days: float) -> dict[str, float]:
    """text → summed recency × role weight over one profile's events (ages from its latest event)."""
    events = list(events)
    if not events:
        return {}
    anchor = max(e.ts for e in events)
    weights: dict[str, float] = {}
    for event in events:
        texts = event_texts(event.properties)
        if not texts:
            continue
        w = 0.5 ** (max((anchor - event.ts).total_seconds(), 0.0) / 86400.0 / half_life_days)
        for text, role in texts:
            weights[text] = weights.get(text, 0.0) + w * role
    heaviest = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TEXTS_PER_PROFILE]
    return dict(heaviest)


def meaning_matrix(weights: Sequence[Mapping[str, float]], vectors: Mapping[str, np.ndarray], dims: int) -> np.ndarray:
    """Each profile's unit weighted mean of its texts' vectors (zeros when none of its texts has one),
    all profiles in one sparse product."""
    columns: dict[str, int] = {}
    rows, cols, values = [], [], []
    for row, profile in enumerate(weights):
        for text, weight in profile.items():
            if text in vectors:
                rows.append(row)
                cols.append(columns.setdefault(text, len(columns)))
                values.append(weight)
    if not columns:
        return np.zeros((len(weights), dims), dtype=np.float32)
    basis = np.asarray([vectors[text] for text in columns], dtype=np.float64)
    from scipy import sparse  # imported here: ~0.2 s at the start of every process that loads segments

    mix = sparse.csr_matrix((values, (rows, cols)), shape=(len(weights), len(columns)), dtype=np.float64)
    total = np.asarray(mix @ basis)
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (total / norms).astype(np.float32)


def combine(behavior: np.ndarray, meaning: np.ndarray, weight: float) -> np.ndarray:
    """Rows [√(1−w)·behavior, √w·meaning], renormalised: cosine = (1−w)·behavior + w·meaning cosine
    for rows that have both; a row with a zero meaning part is its behavior vector."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"meaning weight must be between 0 and 1, got {weight}")
    out = np.concatenate(
        [
            math.sqrt(1.0 - weight) * np.asarray(behavior, np.float32),
            math.sqrt(weight) * np.asarray(meaning, np.float32),
        ],
        axis=1,
    )
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return out / norms


def combine_in_place(z: np.ndarray, behavior_dims: int, weight: float, batch: int = 65_536) -> np.ndarray:
    """`combine` for rows already laid out as [behavior, meaning] in `z`, without a second copy (a
    clustering run's 1M × 576 floats are 2.3 GB). Same values as `combine`."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"meaning weight must be between 0 and 1, got {weight}")
    for start in range(0, len(z), batch):
        rows = z[start : start + batch]
        rows[:, :behavior_dims] *= math.sqrt(1.0 - weight)
        rows[:, behavior_dims:] *= math.sqrt(weight)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        rows /= norms
    return z


def split_center(center: np.ndarray, behavior_dims: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A combined center → (unit behavior part, meaning part scaled by the center's length, share of the
    behavior part in that length), so cosine to the unit center is share·(b·unit part) + √w·(m·meaning)."""
    length = max(float(np.linalg.norm(center)), 1e-12)
    behavior = center[:behavior_dims]
    behavior_length = max(float(np.linalg.norm(behavior)), 1e-12)
    return (
        (behavior / behavior_length).astype(np.float32),
        (center[behavior_dims:] / length).astype(np.float32),
        (behavior_length / length),
    )


def vector_text(vector: np.ndarray) -> str:
    """A vector as pgvector's text form, for COPY."""
    return "[" + ",".join(f"{v:.6g}" for v in vector.tolist()) + "]"


def nearest_combined(
    behavior: np.ndarray,
    meaning: np.ndarray,
    weight: float,
    centroids: np.ndarray,
    meaning_centroids: np.ndarray,
    shares: np.ndarray,
) -> np.ndarray:
    """Index of the nearest combined center for each row, from the parts split_center stored."""
    z = combine(behavior, meaning, weight)
    dims = behavior.shape[1]
    b_part, m_part = z[:, :dims], z[:, dims:]
    scores = (b_part @ centroids.T) * shares[None, :] + m_part @ meaning_centroids.T
    return np.argmax(scores, axis=1)
