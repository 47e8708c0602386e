"""The pure embedder and k-means (no database): fold-in, persistence, hostile input, choice of k."""

from datetime import UTC, datetime, timedelta

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from segments.embedding import BehaviorEvent, TfidfSvdEmbedder, behavior_tokens, embedder_load
from segments.kmeans import k_choose, kmeans_fit

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _docs(n: int, seed: int = 0) -> tuple[list[list[BehaviorEvent]], list[int]]:
    rng = np.random.default_rng(seed)
    kinds = [("trail-shoes", "trail"), ("yoga", "mat"), ("sale", "discount")]
    docs, labels = [], []
    for _ in range(n):
        k = int(rng.integers(3))
        category, word = kinds[k]
        events = []
        for i in range(int(rng.integers(5, 15))):
            cat = category if rng.random() < 0.8 else kinds[int(rng.integers(3))][0]
            ts = NOW - timedelta(hours=float(rng.integers(1, 500)))
            events.append(BehaviorEvent("page_view", ts, {"category": cat, "dwell_ms": int(rng.integers(1, 90_000))}))
            if i % 4 == 0:
                events.append(BehaviorEvent("search", ts, {"query": f"{word} shoes"}))
        docs.append(events)
        labels.append(k)
    return docs, labels


def test_fold_in__same_people__same_vectors_as_the_fit():
    docs, _ = _docs(300)
    embedder = TfidfSvdEmbedder()
    fitted = embedder.fit(docs, now=NOW)
    assert np.allclose(embedder.transform(docs, now=NOW), fitted, atol=1e-5)
    assert np.allclose(np.linalg.norm(fitted, axis=1), 1.0, atol=1e-5)


def test_embedder__saved_and_loaded__projects_identically():
    docs, _ = _docs(200)
    embedder = TfidfSvdEmbedder()
    embedder.fit(docs, now=NOW)
    loaded = embedder_load(embedder.kind, embedder.to_bytes())
    assert loaded.feature_names() == embedder.feature_names()
    assert np.allclose(loaded.transform(docs[:20], now=NOW), embedder.transform(docs[:20], now=NOW))


def test_tokens__recent_events_weigh_more_than_old_ones():
    fresh = behavior_tokens([BehaviorEvent("page_view", NOW, {"category": "yoga"})], now=NOW)
    old = behavior_tokens([BehaviorEvent("page_view", NOW - timedelta(days=14), {"category": "yoga"})], now=NOW)
    assert fresh["category:yoga"] == 1.0 and abs(old["category:yoga"] - 0.5) < 1e-9


def test_tokens__hostile_properties__ignored_not_crashing():
    events = [
        BehaviorEvent("search", NOW, {"query": ["not", "text"], "category": {"x": 1}, "dwell_ms": "soon"}),
        BehaviorEvent("scroll", NOW, {"depth": True, "items": "not-a-list", "item": 5}),
        BehaviorEvent("x" * 500, NOW, "not a dict"),  # type: ignore[arg-type]
        BehaviorEvent("search", NOW, {"query": "ÜBER trail-läufer 🏃 " * 50}),
    ]
    tokens = behavior_tokens(events, now=NOW)
    assert "type:" + "x" * 64 in tokens and "search:trail-l" in tokens
    embedder = TfidfSvdEmbedder()
    vectors = embedder.fit([events, events[:2], *(_docs(30)[0])], now=NOW)
    assert np.isfinite(vectors).all()


def test_kmeans__separated_behaviors__recovered_with_inertia_no_worse_than_one_init():
    docs, labels = _docs(900)
    x = TfidfSvdEmbedder().fit(docs, now=NOW)
    result = kmeans_fit(x, 3)
    assert adjusted_rand_score(labels, result.labels) > 0.9
    baseline = KMeans(n_clusters=3, n_init=1, random_state=0).fit(x)
    assert result.inertia <= baseline.inertia_ * 1.001
    k, scores = k_choose(x, k_min=2, k_max=6)
    assert k == 3, scores
