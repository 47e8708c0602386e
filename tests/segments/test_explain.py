"""The words of "why": segments/explain.py, pure (no database)."""

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from segments import explain, scoring
from segments.embedding import BehaviorEvent

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _event(etype: str, minutes_ago: int, **properties) -> BehaviorEvent:
    return BehaviorEvent(etype, NOW - timedelta(minutes=minutes_ago), properties)


def test_behavior_summary__searches_newest_first_views_by_category_and_purchases():
    events = [
        _event("search", 50, query="visa policy for Japan"),
        _event("page_view", 40, category="hotel"),
        _event("page_view", 30, category="hotel"),
        _event("search", 20, query="travel insurance Asia"),
        _event("page_view", 15, category="hotel"),
        _event("product_view", 10, category="hotel"),
        _event("page_view", 5, category="luggage"),
        _event("purchase", 1, category="luggage"),
    ]
    assert explain.behavior_summary(events) == (
        "searched: travel insurance Asia, visa policy for Japan; viewed 4 hotel pages, 1 luggage page; bought once"
    )
    assert explain.behavior_summary([]) == ""


@pytest.mark.parametrize(
    ("label", "words"),
    [
        ("page_view · category: yoga", "viewed yoga pages"),
        ("add_to_cart · category: trail-shoes", "added trail-shoes to the cart"),
        ("wishlist · category: tents", "wishlist in tents"),
        ("search: trail", "searched “trail”"),
        ("category: trail-shoes", "browsed trail-shoes"),
        ("event: purchase", "bought"),
        ("event: rated", "rated events"),
        ("dwell 15–30 s per page", "dwell 15–30 s per page"),
    ],
)
def test_label_phrase__card_features_read_as_what_a_person_did(label, words):
    assert explain.label_phrase(label) == words


CARD = {
    "over_index": [
        {"feature": "page_view · category: yoga", "ratio": 6.1},
        {"feature": "search: mat", "ratio": 4.0},
        {"feature": "item: cork-yoga-mat", "ratio": 3.2},
    ],
    "more": [{"feature": "event: purchase", "ratio": 1.6}],
    "less": [{"feature": "event: search", "ratio": 0.5}],
}


def test_segment_reasons__the_cards_behaviors_the_person_shows__most_characteristic_first_with_counts():
    events = [_event("page_view", i, category="yoga") for i in range(5)]
    events += [_event("purchase", 1, item="cork-yoga-mat"), _event("page_view", 9, category="running")]
    labels = explain.person_labels(events, now=NOW)
    assert labels["page_view · category: yoga"] == pytest.approx(5, abs=1e-6)  # every event counts once
    reasons = explain.segment_reasons(labels, CARD)
    assert [r.text for r in reasons] == [
        "viewed yoga pages (5 times)",
        "looked at cork-yoga-mat (once)",
        "bought (once)",
    ]
    assert [r.weight for r in reasons] == [6.1, 3.2, 1.6]
    sentence = explain.segment_sentence("Yoga", reasons)
    assert sentence.startswith("In “Yoga” because they viewed yoga pages (5 times); looked at")
    assert "6.1×" in sentence


def test_segment_reasons__none_of_the_cards_behaviors__says_so_instead_of_making_one_up():
    labels = explain.person_labels([_event("page_view", 1, category="running")], now=NOW)
    assert explain.segment_reasons(labels, CARD) == []
    assert "none of the behaviors that set this segment apart" in explain.segment_sentence("Yoga", [])
    assert explain.segment_headline(CARD) == "viewed yoga pages"
    assert explain.segment_headline({}) == ""


def test_intent_sentence__phrases_and_nearest_example_or_no_phrase():
    sentence = explain.intent_sentence(
        name="planning a trip",
        score=0.72,
        threshold=0.4,
        phrases=["visa rules for japan", "hotel near kyoto station"],
        nearest_example="visa rules",
    )
    assert sentence == (
        "Scores 0.72 on “planning a trip” (at or above its threshold 0.4), driven by “visa rules for japan”,"
        " “hotel near kyoto station”; nearest example phrase of the intent: “visa rules”."
    )
    low = explain.intent_sentence(name="trip", score=0.25, threshold=0.4, phrases=[], nearest_example=None)
    assert low == "Scores 0.25 on “trip” (below its threshold 0.4): no single text of theirs stands out."
    vectors = np.eye(3, dtype=np.float32)
    assert explain.nearest_index(vectors[1], vectors) == 1
    assert explain.nearest_index(np.zeros(3), vectors) is None


def _fitted_model() -> tuple[dict, np.ndarray]:
    """A logistic model on two features where recent visits raise the chance of buying."""
    rng = np.random.default_rng(3)
    n = 400
    visits = rng.poisson(3, n).astype(float)
    noise = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(visits - 3)))).astype(float)
    X = np.column_stack([np.log1p(visits), noise])
    spec = {"goal": "purchase", "types": [], "categories": [], "lookback_days": 180}
    model = scoring.model_fit("likely_to_buy", X, y, spec=spec, horizon_days=7)
    model["features"] = ["sessions_7d", "tenure_days"]  # names the phrase builder knows
    return model, X


def test_score_contributions__sum_to_the_link_and_push_up_for_many_visits():
    model, _ = _fitted_model()
    x = np.array([math.log1p(9), 0.0])
    parts = explain.score_contributions(model, x)
    link = sum(part for _, _, part in parts) + model["intercept"]
    # Exactly the model's own prediction: the contributions are the linear predictor split by feature.
    assert 1 / (1 + math.exp(-link)) == pytest.approx(float(scoring.model_predict(model, x[None, :])[0]))
    up, down = explain.score_reasons(model, x)
    assert up[0].text == "9 visits in the last 7 days" and up[0].weight > 0
    assert all(r.weight < 0 for r in down)
    _, few_down = explain.score_reasons(model, np.array([0.0, 0.0]))
    assert few_down[0].text == "0 visits in the last 7 days"
    sentence = explain.score_sentence(label="Likely to buy", value=0.8, top_percent=7, up=up, down=[])
    assert sentence.startswith("Likely to buy 0.8, top 10 % of everyone scored: pushed up by 9 visits")
    assert explain.score_contributions({**model, "kind": "trees"}, x) is None


@pytest.mark.parametrize(
    ("top", "words"), [(0.5, "top 1 %"), (10, "top 10 %"), (20, "top quarter"), (50, "upper half"), (51, "lower half")]
)
def test_band__a_top_percent_in_words(top, words):
    assert explain.band(top) == words


@pytest.mark.parametrize(
    ("feature", "value", "words"),
    [
        ("recency_days", 3.2, "last active 3 days ago"),
        ("recency_days", 180, "no visit in the lookback"),
        ("goals", math.log1p(2), "2 × purchase"),
        ("days_since_goal", 200, "never a purchase in the lookback"),
        ("value", math.log1p(120.5), "120.50 of value in all"),
        ("type:add_to_cart", math.log1p(4), "4 × add_to_cart"),
        ("category:yoga", 0.25, "25% of events in yoga"),
    ],
)
def test_feature_phrase__log_counts_read_as_counts(feature, value, words):
    assert explain.feature_phrase(feature, value) == words
