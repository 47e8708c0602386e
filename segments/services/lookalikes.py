"""Lookalike audiences: the people most like a seed, found with pgvector's HNSW index.

Seed: a segment, the people who converted on a goal in a time window, or uploaded user ids; each
seed person may weigh by value (revenue). A varied seed is split into up to five groups (weighted
k-means); each group gives a direction w = (Σ + λI)⁻¹ (μ_group − μ_everyone), Σ the population's
covariance (regularised linear discriminant). Vectors are unit length, so ranking by cosine to w is
ranking by w·x, and the HNSW cosine index serves it; a person's score is the best over the groups.
Why not the seed's centroid: the centroid finds people whose whole profile resembles the average
seed person; on a public ratings dataset (tests/segments/test_lookalike_datasets.py) it found a
genre's fans less well than a plain cosine on genre shares, because what all people share (popular
titles, the top genres) dominates it. The direction weighs what sets the seed apart.

Quality, before saving (lookalike_preview), by 5-fold cross-fitting over the seed: each fifth is
scored by directions fitted on the other four, and placed among the non-seed population scored the
same way. recall(N) = the share of seed people that rank within the top N; under the assumption that
the seed is a random sample of the people like it, that is also the share of the non-seed people
like the seed that a lookalike of N reaches. precision(N) = recall(N) × P / N, where P, the number
of non-seed people like the seed, is not identified by a seed and an unlabelled population (positive-
unlabelled data): the data bound it only from above, by N / recall(N) where the top of the ranking is
made of people like the seed. So precision is shown as a range the data allow, not a point: the
optimistic end reads P where nearly all the seed is reached and assumes that top is all like the seed;
the cautious end reads it where an eighth is reached and assumes only TOP_PURITY_MIN of it is (on
MovieLens genre fans the top is 0.6–0.95 fans). Each end widens by its bootstrap standard error over
the seed people, times the Imbens–Manski multiplier for a 90 % range, and the number shown is the
middle. No number is shown, with the reason, when the seed is too small, the
ranking is no better than random, or the range is too wide to use. Measured on two public datasets and
the demo (tests/segments/test_lookalike_datasets.py, test_lookalikes.py).
"""

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction

from personalization import selectors as people
from segments import embedding, meaning
from segments.models import Intent, ProfileIntent, Segment, SegmentKind, SegmentMembership
from segments.services import embeddings as embeddings_service
from segments.services import meaning as meaning_service
from segments.services.clustering import SegmentsError
from segments.services.memberships import memberships_publish_on_commit

SMALL_SEED = 100
FOLDS = 5
# Below this many seed people with behavior the cross-fitted curve is noise: no precision estimate.
MIN_SEED_TO_ESTIMATE = 30
BOOTSTRAP = 200
# Wider than this and the precision range says nothing a marketer can act on: that size shows none.
MAX_INTERVAL_WIDTH = 0.6
# The lower end's assumption: at least this share of the top of the ranking (where an eighth of the
# seed is reached) is like the seed. Not identified by the data (module doc); 1.0 made the range run
# high on MovieLens (21 of 37 ranges held the measured precision); with 0.75, 28 of 32 do.
TOP_PURITY_MIN = 0.75
RIDGE = 1.0
# Where P is read for the cautious and the optimistic end (shares of the seed reached): reading it
# where nearly all the seed is reached keeps the optimistic end above the truth when the seed is found
# more easily than the others like it (the demo's converters among its trail runners: 0.57 measured).
REACH = (0.125, 0.9)
CURVE_SHARES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)
EF_SEARCH = 200
MAX_SIZE = 1_000_000
PRECISION_MEANING = (
    "precision is a range, not a point: which people outside the seed are like it cannot be told from"
    " the seed alone, so the range spans the cautious and the optimistic reading of the ranking, each"
    " with its 90 % sampling uncertainty; the number is its middle"
)
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


def seed_from_intent(*, project_id: int, intent_key: str) -> Seed:
    """The people whose score on a named intent is at or above its threshold, weighted by the score: a
    lookalike of them finds people who behave like those who expressed the need."""
    intent = Intent.objects.filter(project_id=project_id, key=intent_key).first()
    if intent is None:
        raise SegmentsError(
            "seed_intent", f"no intent “{intent_key[:48]}” in this project; pick one under Segments → Intents"
        )
    rows = ProfileIntent.objects.filter(intent=intent, score__gte=intent.threshold).values_list("profile_id", "score")
    return Seed(dict(rows), {"kind": "intent", "intent": intent_key, "threshold": intent.threshold})


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


def _groups(vectors: np.ndarray, weights: np.ndarray, seed: int = 0) -> np.ndarray:
    """Group label of each seed person: 1 group for a small or uniform seed, up to 5 for a varied one."""
    # scikit-learn takes about a second to import: only the code that fits pays for it
    from sklearn.cluster import KMeans

    k = int(min(5, max(1, len(vectors) // 40)))
    if k == 1:
        return np.zeros(len(vectors), dtype=np.int64)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors, sample_weight=weights).labels_


def _directions(x: np.ndarray, seed_x: np.ndarray, weights: np.ndarray, rng_seed: int = 0) -> np.ndarray:
    """Unit directions that set the seed's groups apart from everyone (see the module doc)."""
    cov = np.cov(x.T) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    ridge = RIDGE * max(float(np.trace(cov)) / x.shape[1], 1e-6)
    system = cov + ridge * np.eye(x.shape[1])
    mean = x.mean(axis=0)
    labels = _groups(seed_x, weights, rng_seed)
    out = []
    for g in np.unique(labels):
        w = weights[labels == g]
        group_mean = (w[:, None] * seed_x[labels == g]).sum(axis=0) / w.sum()
        direction = np.linalg.solve(system, group_mean - mean)
        # A seed that behaves like everyone has no direction of its own: its centroid ranks instead.
        tiny = np.linalg.norm(group_mean - mean) <= 1e-6 * max(float(np.linalg.norm(group_mean)), 1e-12)
        out.append(group_mean if tiny else direction)
    directions = np.array(out, dtype=np.float64)
    return (directions / np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _seed_vectors(project_id: int, seed: Seed):
    ids, x = embeddings_service.embeddings_matrix(project_id=project_id)
    weight = meaning_service.lookalike_meaning_weight()
    if weight > 0 and len(ids):
        meanings = meaning_service.meanings_matrix(project_id=project_id, profile_ids=ids)
        if meanings.any():
            x = meaning.combine(x, meanings, weight)
    in_seed = np.isin(ids, np.fromiter(seed.weights, dtype=np.int64, count=len(seed.weights)))
    return ids, x, in_seed


def _ranks_out_of_fold(x, seed_rows, weights, others, rng) -> np.ndarray:
    """For every seed person: how many non-seed people outscore them under directions fitted without
    their fold (cross-fitting, so the seed never grades itself)."""
    folds = rng.permutation(len(seed_rows)) % FOLDS
    above = np.zeros(len(seed_rows), dtype=np.float64)
    for fold in range(FOLDS):
        test = folds == fold
        if not test.any() or test.all():
            continue
        directions = _directions(x, x[seed_rows[~test]], weights[~test], fold)
        # Rounded: people with the same behavior (common in purchase panels) must tie exactly, and
        # two matrix products may differ in the last bits. A tie counts half, as a mid-rank does;
        # counted as a win it made seed people look easier to find than the others like them.
        population = np.sort(np.round((x[others] @ directions.T).max(axis=1), 5))
        scores = np.round((x[seed_rows[test]] @ directions.T).max(axis=1), 5)
        greater = len(population) - np.searchsorted(population, scores, side="right")
        equal = np.searchsorted(population, scores, side="right") - np.searchsorted(population, scores, side="left")
        above[test] = greater + equal / 2
    return above


def _precision_estimate(
    above: np.ndarray, sizes: np.ndarray, population: int, reach: float = 0.25
) -> tuple[np.ndarray, float]:
    """(precision at each size, estimated number of non-seed people like the seed); see the module doc.
    P is read at the size that reaches `reach` of the seed (at least 10 people)."""
    ranked = np.sort(above)
    n = len(ranked)
    reached = min(n, max(10, math.ceil(n * reach)))
    needed = ranked[reached - 1] + 1  # the size that holds the `reached` best-ranked seed people
    like = float(min(population, needed * n / reached))
    recall = np.searchsorted(ranked, sizes, side="left") / n
    return np.minimum(1.0, recall * like / sizes), like


def _wilson(hits: int, n: int, z: float = 1.645) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def lookalike_preview(*, project_id: int, seed: Seed, rng_seed: int = 0) -> dict:
    """The expected quality of a lookalike of `seed`: cross-fitted recall and lift curve, estimated
    precision with its interval (or the reason there is none), signed influential behaviors,
    warnings. Exact scan in numpy (a project's embeddings fit in memory)."""
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
    others = np.flatnonzero(~in_seed)
    population = len(others)
    if population == 0:
        raise SegmentsError("seed", _EVERYONE_IN_SEED)
    weights = np.array([seed.weights[int(pid)] for pid in ids[seed_rows]], dtype=np.float64)
    directions = _directions(x, x[seed_rows], weights, rng_seed)
    ranked_scores = np.sort((x[others] @ directions.T).max(axis=1))[::-1]
    sizes = np.array([max(1, round(population * share)) for share in CURVE_SHARES])
    above = _ranks_out_of_fold(x, seed_rows, weights, others, rng) if n_seed >= FOLDS else None
    estimate = _estimate(above, sizes, population)
    curve = []
    for i, (share, size) in enumerate(zip(CURVE_SHARES, sizes.tolist(), strict=True)):
        hits = int((above < size).sum()) if above is not None else 0
        recall = hits / n_seed if above is not None else None
        low, high = _wilson(hits, n_seed) if above is not None else (None, None)
        curve.append(
            {
                "share": share,
                "percent": share * 100,
                "size": size,
                "recall": recall,
                "recall_interval": [low, high] if recall is not None else None,
                "lift": (recall / share) if recall is not None else None,
                "precision": estimate["precision"][i] if estimate["precision"] else None,
                "precision_interval": estimate["interval"][i] if estimate["interval"] else None,
                "similarity": float(ranked_scores[size - 1]),
            }
        )
    return {
        "seed_size": len(seed.weights),
        "seed_embedded": n_seed,
        "held_out": n_seed if above is not None else 0,
        "folds": FOLDS,
        "population": population,
        "sub_centroids": len(directions),
        "curve": curve,
        "estimated_like_seed": estimate["like"],
        "precision_meaning": PRECISION_MEANING if estimate["precision"] else "",
        "precision_reason": estimate["reason"],
        "influential": _influential(project_id, x, x[seed_rows], weights),
        "warnings": warnings,
    }


def _estimate(above: np.ndarray | None, sizes: np.ndarray, population: int) -> dict:
    """Precision at each size with its bootstrap interval over the seed, or the reason for none."""
    none = {"precision": None, "interval": None, "like": None}
    if above is None or len(above) < MIN_SEED_TO_ESTIMATE:
        n = 0 if above is None else len(above)
        return none | {"reason": f"{n} seed people with behavior, at least {MIN_SEED_TO_ESTIMATE} are needed"}
    share_top = float((above < sizes[CURVE_SHARES.index(0.1)]).mean())
    if share_top < 0.15:
        return none | {
            "reason": f"only {share_top:.0%} of the seed ranks in the top 10 % when it is left out, about what"
            " chance gives: behavior does not tell these people apart"
        }
    cautious = TOP_PURITY_MIN * _precision_estimate(above, sizes, population, REACH[0])[0]
    optimistic, like = _precision_estimate(above, sizes, population, REACH[1])
    optimistic = np.maximum(optimistic, cautious)
    # Sampling uncertainty of each end: a bootstrap over the seed people.
    rng = np.random.default_rng(0)
    samples = [rng.choice(above, size=len(above)) for _ in range(BOOTSTRAP)]
    spread_low = np.std([_precision_estimate(a, sizes, population, REACH[0])[0] for a in samples], axis=0)
    spread_high = np.std([_precision_estimate(a, sizes, population, REACH[1])[0] for a in samples], axis=0)
    spread_low *= TOP_PURITY_MIN
    z = _imbens_manski_z(optimistic - cautious, np.maximum(spread_low, spread_high))
    low = np.maximum(0.0, cautious - z * spread_low)
    high = np.minimum(1.0, optimistic + z * spread_high)
    usable = (high - low) <= MAX_INTERVAL_WIDTH
    if not usable.any():
        return none | {
            "reason": f"its range is wider than {MAX_INTERVAL_WIDTH:.1f} at every size: the seed is too small or"
            " too varied for a usable number (recall is shown)"
        }
    middle = (low + high) / 2
    return {
        "precision": [float(p) if ok else None for p, ok in zip(middle, usable, strict=True)],
        "interval": [[float(a), float(b)] if ok else None for a, b, ok in zip(low, high, usable, strict=True)],
        "like": [round(TOP_PURITY_MIN * _precision_estimate(above, sizes, population, REACH[0])[1]), round(like)],
        "reason": "",
    }


def _imbens_manski_z(width: np.ndarray, spread: np.ndarray, level: float = 0.90) -> np.ndarray:
    """The multiplier of each end's standard error so that the range holds the true precision with
    probability `level` wherever it lies between the ends (Imbens & Manski, 2004): 1.645 when the
    ends meet, falling to 1.28 as the range widens, since only one end can then be missed."""
    # Imported here: scipy.optimize and scipy.special add ~0.5 s to the start of every process that loads
    # segments. ndtr/ndtri: the normal cdf and its inverse, without scipy.stats's 1 s import.
    from scipy.optimize import brentq
    from scipy.special import ndtr, ndtri

    z = np.full(len(width), ndtri(level))
    for i, (w, s) in enumerate(zip(width.tolist(), spread.tolist(), strict=True)):
        if s > 0:
            z[i] = brentq(lambda c, r=w / s: ndtr(c + r) - ndtr(-c) - level, 0.0, 10.0)
    return z


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


def _exact_top(ids: np.ndarray, x: np.ndarray, centers: np.ndarray, *, exclude: list[int], limit: int) -> dict:
    """profile → cosine to the nearest center, the `limit` best, seed excluded (exact, in numpy)."""
    scores = (x @ centers.T).max(axis=1)
    scores[np.isin(ids, np.asarray(exclude, dtype=np.int64))] = -np.inf
    top = np.argsort(-scores, kind="stable")[:limit]
    return {int(ids[i]): float(scores[i]) for i in top if np.isfinite(scores[i])}


def lookalike_name_check(name: str) -> str:
    """The name stripped, or SegmentsError("name") saying what a name must be."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise SegmentsError("name", "give the lookalike a name of 1 to 120 characters")
    return name


def lookalike_size_check(size: int) -> None:
    if not 1 <= size <= MAX_SIZE:
        raise SegmentsError("size", f"choose a size between 1 and {MAX_SIZE:,} people")


def lookalike_build(
    *,
    project,
    seed: Seed,
    size: int,
    name: str,
    key: str = "",
    by: AbstractBaseUser | None = None,
    rng_seed: int = 0,
    progress: Callable[[int, str], None] | None = None,
) -> Segment:
    """Save the `size` people most like the seed (never the seed, never anyone who may not be
    profiled) as a lookalike segment that decide can target. The dashboard calls it in a worker
    (lookalike_build_request); `progress(percent, label)` is told each step."""
    name = lookalike_name_check(name)
    lookalike_size_check(size)
    progress = progress or (lambda pct, label: None)
    progress(10, "Reading the people's behavior vectors")
    ids, x, in_seed = _seed_vectors(project.pk, seed)
    if not in_seed.any():
        raise SegmentsError("seed", "none of the seed's people has enough behavior to compare; choose a larger seed")
    seed_ids = ids[in_seed]
    weights = np.array([seed.weights[int(pid)] for pid in seed_ids], dtype=np.float64)
    progress(40, f"Learning what {int(in_seed.sum()):,} seed people share")
    centers = _directions(x, x[in_seed], weights, rng_seed)
    exclude = sorted(int(pid) for pid in seed.weights)
    progress(60, f"Finding the {size:,} people most like them among {len(ids):,}")
    if x.shape[1] > embedding.DIMS:
        # With meaning the vectors are [behavior, meaning]; the HNSW index holds behavior alone, so the
        # ranking is an exact scan in numpy (the matrix is in memory already).
        found = _exact_top(ids, x, centers, exclude=exclude, limit=size)
    else:
        found = lookalike_query(project_id=project.pk, centers=centers, exclude=exclude, limit=size)
    blocked = people.profiles_not_profilable(project_id=project.pk, profile_ids=found)
    ranked = sorted(((s, pid) for pid, s in found.items() if pid not in blocked), reverse=True)[:size]
    if not ranked:
        raise SegmentsError("seed", _EVERYONE_IN_SEED)
    key = key or f"ll-{secrets.token_hex(4)}"
    progress(85, f"Saving {len(ranked):,} people")
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
