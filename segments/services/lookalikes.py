"""Lookalike audiences: the people most like a seed, found with pgvector's HNSW index.

Seed: a segment, the people who converted on a goal in a time window, or uploaded user ids; each
seed person may weigh by value (revenue). A varied seed is summarised by several sub-centroids
(weighted k-means), not one average, and a person's similarity is to the nearest sub-centroid.

Quality, before saving: a fifth of the seed is held out; the rest builds the sub-centroids and the
curve says how much of the held-out part ranks within the top k % of the population (recall@k, and
its lift over random, recall@k ÷ k). The estimated precision at a size N is a positive-unlabelled
estimate (Elkan & Noto, 2008): a logistic curve g(score) = P(held out | score) is fitted over the
non-seed population, c = mean g over the held-out seed is the share of "people like the seed" that
were held out, and P(like the seed | score) = g / c; precision(N) is its mean over the top N.
(tests/segments/test_lookalikes.py compares it with the precision measured on the demo's intents.)
"""

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction

from personalization import selectors_segments as people
from segments import embedding
from segments.models import Segment, SegmentKind, SegmentMembership
from segments.services import embeddings as embeddings_service
from segments.services.clustering import SegmentsError
from segments.services.memberships import memberships_publish_on_commit

SMALL_SEED = 100
HOLDOUT_SHARE = 0.2
CURVE_SHARES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)
EF_SEARCH = 200
MAX_SIZE = 1_000_000
_EVERYONE_IN_SEED = (
    "the seed holds everyone with enough behavior, so there is nobody left to find; choose a smaller seed"
)


@dataclass
class Seed:
    """Seed people (profile id → weight) and how they were chosen (for the saved definition)."""

    weights: dict[int, float]
    description: dict
    missing: list[str] = field(default_factory=list)


def seed_from_segment(*, project_id: int, segment_key: str, by_value: bool = False) -> Seed:
    segment = Segment.objects.filter(project_id=project_id, key=segment_key).first()
    if segment is None:
        raise SegmentsError("seed_segment", f"no segment “{segment_key}” in this project; pick one from the list")
    ids = SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True)
    weights = dict.fromkeys(ids, 1.0)
    if by_value:
        values = people.profiles_outcomes(
            project_id=project_id, since=people.behavior_clock(project_id=project_id) - timedelta(days=90)
        )
        weights = {pid: 1.0 + values.get(pid, (0, 0.0))[1] for pid in weights}
    return Seed(weights, {"kind": "segment", "segment": segment_key, "by_value": by_value})


def seed_from_converters(*, project_id: int, goal: str, start: datetime, end: datetime, by_value: bool = False) -> Seed:
    if not goal or len(goal) > 64:
        raise SegmentsError("seed_goal", "name the goal event, e.g. purchase")
    if start >= end:
        raise SegmentsError("seed_start", "the window must start before it ends")
    converters = people.profiles_converters(project_id=project_id, goal=goal, start=start, end=end)
    weights = {pid: (1.0 + value if by_value else 1.0) for pid, value in converters.items()}
    description = {
        "kind": "converters",
        "goal": goal,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "by_value": by_value,
    }
    return Seed(weights, description)


def seed_from_ids(*, project_id: int, text: str) -> Seed:
    ids = [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]
    if not ids:
        raise SegmentsError("seed_ids", "paste user ids or anonymous ids, one per line or separated by commas")
    if len(ids) > 1_000_000:
        raise SegmentsError("seed_ids", "at most 1,000,000 ids per upload")
    found, missing = people.profiles_by_external_ids(project_id=project_id, ids=ids)
    return Seed(dict.fromkeys(found.values(), 1.0), {"kind": "ids", "count": len(ids)}, missing)


def _sub_centroids(vectors: np.ndarray, weights: np.ndarray, seed: int = 0) -> np.ndarray:
    """1 centroid for a small or uniform seed; up to 5 for a varied one (weighted k-means)."""
    from sklearn.cluster import KMeans

    k = int(min(5, max(1, len(vectors) // 40)))
    if k == 1:
        centers = (weights[:, None] * vectors).sum(axis=0, keepdims=True)
    else:
        centers = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors, sample_weight=weights).cluster_centers_
    return (centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def _seed_vectors(project_id: int, seed: Seed):
    ids, x = embeddings_service.embeddings_matrix(project_id=project_id)
    in_seed = np.isin(ids, np.fromiter(seed.weights, dtype=np.int64, count=len(seed.weights)))
    return ids, x, in_seed


def lookalike_preview(*, project_id: int, seed: Seed, rng_seed: int = 0) -> dict:
    """The expected quality of a lookalike of `seed`: recall/lift curve, estimated precision, signed
    influential behaviors, warnings. Exact scan in numpy (a project's embeddings fit in memory)."""
    ids, x, in_seed = _seed_vectors(project_id, seed)
    n_seed = int(in_seed.sum())
    warnings = []
    if n_seed == 0:
        raise SegmentsError("seed", "none of the seed's people has enough behavior to compare; choose a larger seed")
    if n_seed < SMALL_SEED:
        warnings.append(
            f"The seed has only {n_seed} people with enough behavior (under {SMALL_SEED}): the lookalike and this"
            " estimate are unreliable."
        )
    if seed.missing:
        warnings.append(f"{len(seed.missing)} uploaded ids are unknown to Kairos and were left out.")
    rng = np.random.default_rng(rng_seed)
    seed_rows = np.flatnonzero(in_seed)
    weights_all = np.array([seed.weights[int(pid)] for pid in ids[seed_rows]], dtype=np.float64)
    held = rng.random(len(seed_rows)) < HOLDOUT_SHARE if len(seed_rows) >= 5 else np.zeros(len(seed_rows), bool)
    train_rows, held_rows = seed_rows[~held], seed_rows[held]
    centers = _sub_centroids(x[train_rows], weights_all[~held], rng_seed)
    scores = (x @ centers.T).max(axis=1)
    candidates = np.ones(len(ids), bool)
    candidates[train_rows] = False
    population = int(candidates.sum())
    if population == 0:
        raise SegmentsError("seed", _EVERYONE_IN_SEED)
    order = np.argsort(-scores[candidates])
    held_mask = np.zeros(len(ids), bool)
    held_mask[held_rows] = True
    held_ranked = np.cumsum(held_mask[candidates][order])
    curve = []
    ranked_scores = scores[candidates][order]
    like_seed = _like_seed_cumulative(ranked_scores, held_mask[candidates][order])
    estimated_like = round(float(like_seed[-1])) if len(like_seed) else 0
    for share in CURVE_SHARES:
        size = max(1, round(population * share))
        recall = float(held_ranked[size - 1] / len(held_rows)) if len(held_rows) else None
        precision = float(like_seed[size - 1] / size) if len(held_rows) else None
        curve.append(
            {
                "share": share,
                "percent": share * 100,
                "size": size,
                "recall": recall,
                "lift": (recall / share) if recall is not None else None,
                "precision": precision,
                "similarity": float(ranked_scores[size - 1]),
            }
        )
    return {
        "seed_size": len(seed.weights),
        "seed_embedded": n_seed,
        "held_out": len(held_rows),
        "population": population,
        "sub_centroids": len(centers),
        "curve": curve,
        "estimated_like_seed": estimated_like,
        "influential": _influential(project_id, x, x[train_rows], weights_all[~held]),
        "warnings": warnings,
    }


def _like_seed_cumulative(ranked_scores: np.ndarray, ranked_held: np.ndarray) -> np.ndarray:
    """Expected number of people like the seed among the top n, for every n (see the module doc)."""
    from sklearn.linear_model import LogisticRegression

    if ranked_held.sum() < 3 or ranked_held.all():
        return np.zeros(len(ranked_scores))
    features = np.column_stack([ranked_scores, ranked_scores**2])
    g = LogisticRegression(C=10.0, max_iter=500).fit(features, ranked_held).predict_proba(features)[:, 1]
    c = float(g[ranked_held].mean())
    return np.cumsum(np.minimum(1.0, g / max(c, 1e-9)))


def _influential(project_id: int, x: np.ndarray, seed_x: np.ndarray, weights: np.ndarray, top: int = 6) -> list:
    """Behaviors that most set the seed apart, signed: + done more by the seed, − done less."""
    latest = embeddings_service.embedder_latest(project_id=project_id)
    embedder = embeddings_service.embedder_load(project_id=project_id, version=latest.version) if latest else None
    if embedder is None or not len(seed_x):
        return []
    rank = embedder.components.shape[0]
    seed_mean = (weights[:, None] * seed_x).sum(axis=0) / weights.sum()
    diff = (seed_mean[:rank] - x.mean(axis=0)[:rank]) @ embedder.components
    names = embedder.feature_names()
    order = np.argsort(-diff)
    chosen = [c for c in order[:top] if diff[c] > 0] + [c for c in order[::-1][: top // 2] if diff[c] < 0]
    return [{"feature": embedding.token_label(names[c]), "weight": round(float(diff[c]), 4)} for c in chosen]


def lookalike_query(*, project_id: int, centers: np.ndarray, exclude: list[int], limit: int) -> dict[int, float]:
    """profile → cosine similarity to the nearest center, the `limit` best per center, by HNSW."""
    found: dict[int, float] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        # relaxed_order: with a WHERE the index keeps scanning until LIMIT rows pass it; without it
        # an ef_search below LIMIT returns too few rows (measured in bench/segments.py).
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(EF_SEARCH, min(limit, 1000))])
        cursor.execute("SET LOCAL hnsw.max_scan_tuples = %s", [max(20_000, limit * 20)])
        for center in centers:
            text = "[" + ",".join(f"{v:.6g}" for v in center.tolist()) + "]"
            cursor.execute(
                "SELECT profile_id, 1 - (vector <=> %s::vector) AS similarity FROM segments_profileembedding"
                " WHERE project_id = %s AND profile_id <> ALL(%s) ORDER BY vector <=> %s::vector LIMIT %s",
                [text, project_id, exclude, text, limit],
            )
            for profile_id, similarity in cursor.fetchall():
                if similarity > found.get(profile_id, -2.0):
                    found[profile_id] = similarity
    return found


def lookalike_build(
    *,
    project,
    seed: Seed,
    size: int,
    name: str,
    key: str = "",
    by: AbstractBaseUser | None = None,
    rng_seed: int = 0,
) -> Segment:
    """Save the `size` people most like the seed (never the seed, never anyone who may not be
    profiled) as a lookalike segment that decide can target."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise SegmentsError("name", "give the lookalike a name of 1 to 120 characters")
    if not 1 <= size <= MAX_SIZE:
        raise SegmentsError("size", f"choose a size between 1 and {MAX_SIZE:,} people")
    ids, x, in_seed = _seed_vectors(project.pk, seed)
    if not in_seed.any():
        raise SegmentsError("seed", "none of the seed's people has enough behavior to compare; choose a larger seed")
    seed_ids = ids[in_seed]
    weights = np.array([seed.weights[int(pid)] for pid in seed_ids], dtype=np.float64)
    centers = _sub_centroids(x[in_seed], weights, rng_seed)
    exclude = sorted(int(pid) for pid in seed.weights)
    found = lookalike_query(project_id=project.pk, centers=centers, exclude=exclude, limit=size)
    blocked = people.profiles_not_profilable(project_id=project.pk, profile_ids=found)
    ranked = sorted(((s, pid) for pid, s in found.items() if pid not in blocked), reverse=True)[:size]
    if not ranked:
        raise SegmentsError("seed", _EVERYONE_IN_SEED)
    key = key or f"ll-{secrets.token_hex(4)}"
    with transaction.atomic():
        if Segment.objects.filter(project=project, key=key).exists():
            raise SegmentsError("key", f"“{key}” is taken; choose another key")
        segment = Segment.objects.create(
            project=project,
            key=key,
            kind=SegmentKind.LOOKALIKE,
            name=name,
            suggested_name=name,
            size=len(ranked),
            definition={"seed": seed.description, "size": size, "sub_centroids": len(centers)},
            created_by=by,
        )
        SegmentMembership.objects.bulk_create(
            [SegmentMembership(segment=segment, profile_id=pid, score=float(s)) for s, pid in ranked], batch_size=5000
        )
        memberships_publish_on_commit(project_id=project.pk, profile_ids=[pid for _, pid in ranked])
    return segment
