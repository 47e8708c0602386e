"""The pure embedder and k-means (no database): fold-in, persistence, hostile input, choice of k."""

from datetime import UTC, datetime, timedelta

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from segments.embedding import BehaviorEvent, TfidfSvdEmbedder, behavior_tokens, embedder_load
from segments.embedding import token_label as label_of
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
    events = [
        BehaviorEvent("page_view", NOW, {"category": "yoga"}),
        BehaviorEvent("page_view", NOW - timedelta(days=14), {"category": "trail"}),
    ]
    tokens = behavior_tokens(events, now=NOW)
    assert tokens["category:yoga"] == 1.0 and abs(tokens["category:trail"] - 0.5) < 1e-9


def test_tokens__hostile_properties__ignored_not_crashing():
    events = [
        BehaviorEvent("search", NOW, {"query": ["not", "text"], "category": {"x": 1}, "dwell_ms": "soon"}),
        BehaviorEvent("scroll", NOW, {"depth": True, "items": "not-a-list", "item": 5}),
        BehaviorEvent("x" * 500, NOW, "not a dict"),  # type: ignore[arg-type]
        BehaviorEvent("search", NOW, {"query": "ÜBER trail-läufer 🏃 " * 50}),
    ]
    tokens = behavior_tokens(events, now=NOW)
    assert "type:" + "x" * 64 in tokens and "search:trail-läufer" in tokens and "search:über" in tokens
    assert not any(t.startswith("category:") or t.startswith("dwell:") or t.startswith("scroll:") for t in tokens)
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


def test_tokens__other_streams_vocabularies__found_by_role():
    """Public event streams name things their own way (REES46, RetailRocket, GA4, web logs)."""
    events = [
        BehaviorEvent("view", NOW, {"product_id": 1004856, "category_code": "electronics.smartphone",
                                    "brand": "samsung", "price": 130.76, "user_session": "26dd6e6e-4dac-4778"}),
        BehaviorEvent("addtocart", NOW, {"itemid": 355908, "categoryid": 1016}),
        BehaviorEvent("purchase", NOW, {"items": [{"item_id": "SKU_1", "item_category": "Apparel/Men", "price": 9}]}),
        BehaviorEvent("pageview", NOW, {"page_location": "https://shop.example/p/12345?utm=x", "q": "Wanderschuhe 防水",
                                        "engagement_time_msec": 45_000, "percent_scrolled": 90, "title": "Shop"}),
    ]  # fmt: skip
    tokens = behavior_tokens(events, now=NOW)
    expected = {
        "item:1004856", "category:electronics", "category:electronics.smartphone",
        "view|category:electronics.smartphone",
        "prop:brand=samsung", "price:3", "item:355908", "category:1016", "item:SKU_1", "category:Apparel",
        "category:Apparel.Men", "page:/p/#", "search:wanderschuhe", "search:防水", "dwell:3", "scroll:4",
    }  # fmt: skip
    assert expected <= set(tokens), expected - set(tokens)
    assert not any("Shop" in t or "session" in t for t in tokens)  # titles and sessions are not behavior
    assert label_of("prop:brand=samsung") == "brand: samsung" and label_of("price:3") == "price or value 100–300"


def test_kmeans__k_above_distinct_points__empty_clusters_dropped_and_centers_are_their_means():
    points = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    x = np.repeat(points, [5, 7, 9], axis=0)
    result = kmeans_fit(x, 20)
    assert len(result.centers) == 3 and sorted(np.bincount(result.labels).tolist()) == [5, 7, 9]
    for label, center in enumerate(result.centers):
        assert np.allclose(center, x[result.labels == label].mean(axis=0))


def test_kmeans__k_above_distinct_points_in_many_dimensions__identical_people_share_a_cluster():
    # As behavior + meaning vectors (612 dimensions): sklearn relocates spare centers onto the few
    # distinct points, several onto one, and a rounding difference in the distance sums then split
    # identical people between them (5 or 6 clusters of 3 points before the fix).
    rng = np.random.default_rng(3)
    points = rng.normal(size=(3, 612)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    x = np.repeat(points, 10, axis=0)
    result = kmeans_fit(x, 40)
    assert len(result.centers) == 3
    assert all(len(set(result.labels[i : i + 10].tolist())) == 1 for i in (0, 10, 20))
    assert np.allclose(result.centers[result.labels[[0, 10, 20]]], points, atol=1e-6)


def test_tokens__list_valued_properties__each_value_counts_bounded():
    event = BehaviorEvent(
        "rate",
        NOW,
        {
            "genres": ["Action", "Western", "Action"],
            "tags": ["cult"] + [f"t{i}" for i in range(40)],
            "moods": ["dark", "x" * 500, {"nested": 1}, None],
        },
    )
    tokens = behavior_tokens([event], now=NOW)
    assert tokens["category:Action"] == 1.0, "a repeated value counts once per event"
    assert "category:Western" in tokens and "rate|category:Western" in tokens
    assert "category:cult" in tokens
    assert sum(t.startswith("category:t") for t in tokens) == 19, "at most 20 values of a list"
    assert "prop:moods=dark" in tokens
    assert not any("xxx" in t or "nested" in t for t in tokens), "over-long values and objects are not tokens"


def test_tokens__history_that_ended_years_ago__weighs_like_a_recent_one():
    old = [BehaviorEvent("view", NOW - timedelta(days=3650 + i), {"category": "yoga"}) for i in range(5)]
    recent = [BehaviorEvent("view", NOW - timedelta(days=i), {"category": "yoga"}) for i in range(5)]
    assert behavior_tokens(old, now=NOW) == behavior_tokens(recent, now=NOW)
    embedder = TfidfSvdEmbedder(half_life_days=3700.0)
    restored = embedder_load(embedder.kind, embedder.to_bytes())
    assert restored.half_life_days == 3700.0, "fold-in must weigh recency as the fit did"
