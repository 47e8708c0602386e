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
    model.fit(x)
    used, labels = np.unique(model.labels_, return_inverse=True)
    centers = model.cluster_centers_
    if len(used) < k:
        # Fewer distinct behaviors than k (identical people, k above the number of people): drop the
        # clusters nobody is in, so every segment a marketer sees has people. sklearn's centers are then
        # not the means of its labels (it relocates empty clusters onto points), so take the means.
        # Spare centers relocated onto one point split identical people between them (a rounding
        # difference in the distance sums, not their behavior, picked which): clusters whose means
        # coincide are one.
        centers = _label_means(x, labels, len(used))
        used, labels = np.unique(_coincident(centers)[labels], return_inverse=True)
        centers = _label_means(x, labels, len(used))
    return KMeansResult(
        centers=centers.astype(np.float32),
        labels=labels.astype(np.int32),
        inertia=float(model.inertia_),
    )


def _label_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    return sums / counts[:, None]


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
        scores[k] = float(silhouette_score(sample, labels)) if len(set(labels)) > 1 else -1.0
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
