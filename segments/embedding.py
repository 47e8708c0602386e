"""Behavior embeddings: each profile's recent events → a dense unit vector. Pure numpy/scikit-learn, no Django.

A profile's events become a bag of behavior tokens, each weighted by recency (half-life
HALF_LIFE_DAYS): event type, type × category, category, item, search words, dwell and scroll-depth
buckets. The population's bag-of-tokens matrix gets TF-IDF weighting (sublinear tf, smooth idf, L2
rows) and a truncated SVD fitted on it; a profile's vector is its TF-IDF row projected on the SVD
basis, L2-normalised, so cosine distance compares behavior and not activity level.

Fold-in (profiles with new events between refits) is the same projection on the stored basis, so a
vector made by fold-in equals the one a refit on the same basis would give.

`Embedder` is the interface callers use (fit / transform / to_bytes / from_bytes, `kind`, `dims`);
a text-meaning embedder can be added later as another class with the same methods, registered in
EMBEDDERS, without touching the callers.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
from scipy import sparse

DIMS = 64
HALF_LIFE_DAYS = 14.0
MIN_DF = 2
MAX_FEATURES = 50_000
_WORD = re.compile(r"[a-z0-9][a-z0-9\-]{1,30}")


@dataclass(frozen=True, slots=True)
class BehaviorEvent:
    """The part of a stored event an embedder reads."""

    type: str
    ts: datetime
    properties: Mapping
    value: float | None = None


class Embedder(Protocol):
    """What callers of an embedder rely on; any implementation is interchangeable."""

    kind: str
    dims: int

    def fit(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime, seed: int = 0) -> np.ndarray: ...

    def transform(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime) -> np.ndarray: ...

    def to_bytes(self) -> bytes: ...

    def feature_names(self) -> list[str]: ...


def _bucket(value: float, edges: Sequence[float]) -> int:
    for i, edge in enumerate(edges):
        if value < edge:
            return i
    return len(edges)


_DWELL_EDGES_S = (5, 15, 30, 60, 120, 300)
_SCROLL_EDGES = (25, 50, 75, 90)


def behavior_tokens(events: Iterable[BehaviorEvent], *, now: datetime) -> dict[str, float]:
    """Recency-weighted counts of the behavior tokens of one profile's events."""
    bag: dict[str, float] = {}

    def add(token: str, weight: float) -> None:
        bag[token] = bag.get(token, 0.0) + weight

    for event in events:
        age_days = max((now - event.ts).total_seconds(), 0.0) / 86400.0
        w = 0.5 ** (age_days / HALF_LIFE_DAYS)
        props = event.properties if isinstance(event.properties, Mapping) else {}
        etype = str(event.type)[:64]
        add(f"type:{etype}", w)
        category = props.get("category")
        if isinstance(category, str) and category:
            add(f"category:{category[:64]}", w)
            add(f"{etype}|category:{category[:64]}", w)
        items = props.get("items") if isinstance(props.get("items"), list) else [props.get("item")]
        for item in items:
            if isinstance(item, str) and item:
                add(f"item:{item[:64]}", w)
        query = props.get("query")
        if etype == "search" and isinstance(query, str):
            for word in _WORD.findall(query.lower()):
                add(f"search:{word}", w)
        dwell = props.get("dwell_ms")
        if isinstance(dwell, int | float) and not isinstance(dwell, bool) and dwell >= 0:
            add(f"dwell:{_bucket(dwell / 1000.0, _DWELL_EDGES_S)}", w)
        depth = props.get("depth")
        if etype == "scroll" and isinstance(depth, int | float) and not isinstance(depth, bool):
            add(f"scroll:{_bucket(float(depth), _SCROLL_EDGES)}", w)
    return bag


def _describe(token: str) -> str:
    """A token as a marketer reads it: "search: trail", "category: trail-shoes", "3× dwell"."""
    name, _, value = token.rpartition(":")
    if name == "dwell":
        edges = ("<5 s", "5–15 s", "15–30 s", "30–60 s", "1–2 min", "2–5 min", "5+ min")
        return f"dwell {edges[int(value)]} per page"
    if name == "scroll":
        edges = ("<25 %", "25–50 %", "50–75 %", "75–90 %", "90+ %")
        return f"scrolls {edges[int(value)]} deep"
    if name == "type":
        return f"event: {value}"
    return token.replace("|", " · ").replace(":", ": ")


def token_label(token: str) -> str:
    return _describe(token)


class TfidfSvdEmbedder:
    """Behavior tokens → TF-IDF → truncated SVD (fitted on the population) → unit vector of DIMS."""

    kind = "behavior-tfidf-svd"

    def __init__(self, dims: int = DIMS):
        self.dims = dims
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0, dtype=np.float32)
        self.components = np.zeros((0, 0), dtype=np.float32)  # (rank, n_features); rank ≤ dims

    def feature_names(self) -> list[str]:
        names = [""] * len(self.vocabulary)
        for token, col in self.vocabulary.items():
            names[col] = token
        return names

    def _counts(self, bags: Sequence[Mapping[str, float]]) -> sparse.csr_matrix:
        rows, cols, vals = [], [], []
        for r, bag in enumerate(bags):
            for token, weight in bag.items():
                col = self.vocabulary.get(token)
                if col is not None:
                    rows.append(r)
                    cols.append(col)
                    vals.append(weight)
        shape = (len(bags), len(self.vocabulary))
        return sparse.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=shape)

    def _tfidf(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        tf = counts.copy()
        tf.data = np.log1p(tf.data)
        tf = tf.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(tf.multiply(tf).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sparse.diags(1.0 / norms).dot(tf).tocsr().astype(np.float32)

    def tfidf(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime) -> sparse.csr_matrix:
        return self._tfidf(self._counts([behavior_tokens(d, now=now) for d in docs]))

    def fit(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime, seed: int = 0) -> np.ndarray:
        """Learn vocabulary, idf and basis from the population; returns the population's vectors."""
        from sklearn.decomposition import TruncatedSVD

        bags = [behavior_tokens(d, now=now) for d in docs]
        df: dict[str, int] = {}
        for bag in bags:
            for token in bag:
                df[token] = df.get(token, 0) + 1
        kept = sorted((t for t, n in df.items() if n >= MIN_DF), key=lambda t: (-df[t], t))[:MAX_FEATURES]
        self.vocabulary = {t: i for i, t in enumerate(sorted(kept))}
        n = len(bags)
        self.idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in sorted(kept)], dtype=np.float32).reshape(
            1, -1
        )
        matrix = self._tfidf(self._counts(bags))
        rank = max(1, min(self.dims, matrix.shape[1] - 1, n - 1))
        if matrix.shape[1] < 2 or n < 2:
            self.components = np.eye(rank, matrix.shape[1], dtype=np.float32)
        else:
            svd = TruncatedSVD(n_components=rank, algorithm="randomized", n_iter=7, random_state=seed)
            svd.fit(matrix)
            self.components = svd.components_.astype(np.float32)
        return self._project(matrix)

    def _project(self, matrix: sparse.csr_matrix) -> np.ndarray:
        out = np.zeros((matrix.shape[0], self.dims), dtype=np.float32)
        if self.components.size:
            reduced = np.asarray(matrix @ self.components.T, dtype=np.float32)
            out[:, : reduced.shape[1]] = reduced
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms

    def transform(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime) -> np.ndarray:
        """Fold-in: project profiles onto the fitted basis."""
        return self._project(self.tfidf(docs, now=now))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            dims=np.array([self.dims]),
            tokens=np.array(self.feature_names(), dtype=np.str_),
            idf=self.idf,
            components=self.components,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TfidfSvdEmbedder:
        # allow_pickle=False: a stored basis is data, never code.
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            embedder = cls(int(saved["dims"][0]))
            embedder.vocabulary = {str(t): i for i, t in enumerate(saved["tokens"].tolist())}
            embedder.idf = saved["idf"].astype(np.float32)
            embedder.components = saved["components"].astype(np.float32)
        return embedder


EMBEDDERS: dict[str, type] = {TfidfSvdEmbedder.kind: TfidfSvdEmbedder}


def embedder_load(kind: str, data: bytes) -> Embedder:
    return EMBEDDERS[kind].from_bytes(data)
