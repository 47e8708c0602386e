"""k-means for clustering runs, and the choice of k. Pure numpy/scikit-learn, no Django.

Why not plain `KMeans(n_init=1)` on everything: on 1M × 64 it spends most of its time converging
from one k-means++ start. Here several starts run on a sample (cheap), the best one seeds a few
full-data Lloyd iterations (`KMeans(init=centers, n_init=1)`), and the result's inertia is that of a
better start at a fraction of the time (bench/segments.py measures both on the same data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAMPLE_FOR_INIT = 50_000
SAMPLE_FOR_K = 8_000
# The silhouette compares every pair of its rows: 8,000 rows × 576 dimensions was ~25 CPU s per k
# (all of a clustering run's time at 100k people); on 3,000 of them it is a seventh of that.
SAMPLE_FOR_SILHOUETTE = 3_000
# Above this many rows, Lloyd's iterations run on a sample of this size (see kmeans_fit).
SAMPLE_FOR_LLOYD = 200_000
INIT_STARTS = 4
FULL_ITERATIONS = 20


@dataclass(frozen=True)
class KMeansResult:
    centers: np.ndarray  # (k, d) float32
    labels: np.ndarray  # (n,) int32
    inertia: float


def _sample(x: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= size:
        return x
    return x[rng.choice(len(x), size=size, replace=False)]


def kmeans_fit(x: np.ndarray, k: int, *, seed: int = 0, full_iterations: int = FULL_ITERATIONS) -> KMeansResult:
    """Cluster rows of `x` into k groups (squared Euclidean; on unit vectors that is cosine)."""
    from sklearn.cluster import KMeans  # scikit-learn is slow to import: only fitting pays for it

    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    sample = _sample(x, SAMPLE_FOR_INIT, rng)
    starts = KMeans(n_clusters=k, n_init=INIT_STARTS, random_state=seed, max_iter=100).fit(sample)
    model = KMeans(n_clusters=k, init=starts.cluster_centers_, n_init=1, max_iter=full_iterations, tol=1e-4)
    if len(x) <= SAMPLE_FOR_LLOYD:
        model.fit(x)
        raw_labels, centers, inertia = model.labels_, model.cluster_centers_, float(model.inertia_)
    else:
        # Lloyd's iterations on a large sample, then everyone to the nearest center batch by batch:
        # at 1M people × 576 dimensions a full-data fit holds a second copy of the data (sklearn
        # centres it), over 2 GB, for an inertia within a fraction of a percent (bench/segments.py).
        model.fit(_sample(x, SAMPLE_FOR_LLOYD, rng))
        raw_labels, inertia = _nearest(x, model.cluster_centers_)
        centers = label_means(x, raw_labels, k)
    used, labels = np.unique(raw_labels, return_inverse=True)
    if len(used) < k:
        # Fewer distinct behaviors than k (identical people, k above the number of people): drop the
        # clusters nobody is in, so every segment a marketer sees has people. sklearn's centers are then
        # not the means of its labels (it relocates empty clusters onto points), so take the means.
        # Spare centers relocated onto one point split identical people between them (a rounding
        # difference in the distance sums, not their behavior, picked which): clusters whose means
        # coincide are one.
        centers = label_means(x, labels, len(used))
        used, labels = np.unique(_coincident(centers)[labels], return_inverse=True)
        centers = label_means(x, labels, len(used))
    return KMeansResult(
        centers=centers.astype(np.float32),
        labels=labels.astype(np.int32),
        inertia=inertia,
    )


def _nearest(x: np.ndarray, centers: np.ndarray, batch: int = 65_536) -> tuple[np.ndarray, float]:
    """Each row's nearest center (squared Euclidean) and the summed squared distances, batch by batch."""
    centers = centers.astype(np.float32)
    squared = (centers**2).sum(axis=1)
    labels = np.empty(len(x), dtype=np.int32)
    inertia = 0.0
    for start in range(0, len(x), batch):
        rows = x[start : start + batch]
        distances = squared[None, :] - 2 * rows @ centers.T
        labels[start : start + batch] = nearest = np.argmin(distances, axis=1)
        own = distances[np.arange(len(rows)), nearest] + (rows**2).sum(axis=1)
        inertia += float(np.maximum(own, 0.0).sum(dtype=np.float64))
    return labels, inertia


def label_means(x: np.ndarray, labels: np.ndarray, k: int, batch: int = 65_536) -> np.ndarray:
    """Each label's mean row (float64 sums), as one sparse product per batch: np.add.at takes seconds
    at 1M rows."""
    from scipy import sparse  # imported here: ~0.2 s at the start of every process that loads segments

    sums = np.zeros((k, x.shape[1]))
    for start in range(0, len(x), batch):
        part = labels[start : start + batch]
        onehot = sparse.csr_matrix((np.ones(len(part)), (part, np.arange(len(part)))), shape=(k, len(part)))
        sums += onehot @ x[start : start + batch].astype(np.float64)
    return sums / np.maximum(np.bincount(labels, minlength=k), 1)[:, None]


def _coincident(centers: np.ndarray, tolerance: float = 1e-5) -> np.ndarray:
    """For each center, the first center at the same point (itself when none before it is)."""
    c = centers.astype(np.float64)
    squared = (c**2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * c @ c.T, 0.0))
    close = distances <= tolerance * np.maximum(1.0, np.sqrt(squared))[:, None]
    return np.argmax(close, axis=1)  # the first True of each row: the diagonal is always close


def k_choose(
    x: np.ndarray,
    *,
    k_min: int = 3,
    k_max: int = 14,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, dict[int, float]]:
    """The k with the best silhouette score on a sample, and every k's score."""
    # scikit-learn takes about a second to import: only the code that fits pays for it
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    sample = np.ascontiguousarray(_sample(x, SAMPLE_FOR_K, rng), dtype=np.float32)
    k_max = min(k_max, len(sample) - 1)
    scores: dict[int, float] = {}
    candidates = list(range(k_min, k_max + 1))
    for i, k in enumerate(candidates):
        labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(sample)
        scores[k] = (
            float(
                silhouette_score(sample, labels, sample_size=min(SAMPLE_FOR_SILHOUETTE, len(sample)), random_state=seed)
            )
            if len(set(labels)) > 1
            else -1.0
        )
        if progress:
            progress(i + 1, len(candidates))
    if not scores:
        return max(1, min(k_min, len(x))), {}
    return max(scores, key=scores.__getitem__), scores


def over_index(tfidf_means: np.ndarray, overall: np.ndarray, *, top: int = 6) -> list[list[tuple[int, float]]]:
    """Per cluster, the features whose mean weight most exceeds the population's: (column, ratio)."""
    out = []
    floor = max(float(overall.max()) * 1e-3, 1e-9)
    for row in tfidf_means:
        ratio = (row + floor) / (overall + floor)
        score = ratio * np.sqrt(row)  # favour features that matter in the cluster, not rare ones
        cols = np.argsort(-score)[:top]
        out.append([(int(c), float(ratio[c])) for c in cols if row[c] > 0])
    return out
