"""Named intents, pure: the scoring rule on the labelled queries (reported on the whole set and on halves),
the 0-to-1 scale, a person's score from recent texts, and refusals of sensitive categories."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from segments import intents, sensitive, text_encoder
from segments.embedding import BehaviorEvent

LABELLED = Path(__file__).resolve().parent.parent / "data" / "intent_queries.json"
NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def encoder():
    return text_encoder.encoder_load()


@pytest.fixture(scope="module")
def labelled(encoder):
    data = json.loads(LABELLED.read_text())["intents"]
    models = [
        intents.intent_model(key=str(i), name=d["name"], examples=d["examples"], encode=encoder.encode,
                             encoder=encoder.name)
        for i, d in enumerate(data)
    ]  # fmt: skip
    queries = [encoder.encode(d["queries"]) for d in data]
    return data, models, queries


def _accuracy(assign, queries, which) -> float:
    placed = sum(int((assign(queries[i]) == i).sum()) for i in which)
    return placed / sum(len(queries[i]) for i in which)


def _token_only(data) -> float:
    """The behavior embedder (tokens only) on the same task: prototype of name + examples, nearest wins."""
    from segments.embedding import TfidfSvdEmbedder

    texts = [t for d in data for t in (d["name"], *d["examples"], *d["queries"])]
    embedder = TfidfSvdEmbedder()
    embedder.fit([[BehaviorEvent("search", NOW, {"query": t})] for t in texts], now=NOW)

    def encode(batch):
        return embedder.transform([[BehaviorEvent("search", NOW, {"query": t})] for t in batch], now=NOW)

    protos = np.stack([text_encoder.prototype(encode([d["name"], *d["examples"]])) for d in data])
    placed = sum(int((np.argmax(encode(d["queries"]) @ protos.T, axis=1) == i).sum()) for i, d in enumerate(data))
    return placed / sum(len(d["queries"]) for d in data)


def test_intents__labelled_paraphrases__placed_by_the_two_readings_rule__on_both_halves(labelled, encoder):
    data, models, queries = labelled
    assert len(data) >= 10 and all(len(q) >= 12 for q in queries)

    def assign(vectors):
        return intents.intents_assign(models, vectors)

    every = _accuracy(assign, queries, range(len(data)))
    # Two halves each way, so a rule that only suits some intents or some queries shows: intents at even and
    # odd positions, and each intent's first and last six queries.
    even, odd = (_accuracy(assign, queries, range(start, len(data), 2)) for start in (0, 1))
    first, last = (
        _accuracy(assign, [q[part] for q in queries], range(len(data))) for part in (slice(0, 6), slice(6, None))
    )
    # The previous rule, beside it: each example read in the context of the name only.
    contextual = np.stack(
        [text_encoder.prototype(encoder.encode([f"{e} ({d['name']})" for e in d["examples"]])) for d in data]
    )
    before = _accuracy(lambda v: np.argmax(v @ contextual.T, axis=1), queries, range(len(data)))
    print(
        f"intents: {every:.1%} of {sum(map(len, queries))} queries placed (even intents {even:.1%}, odd {odd:.1%};"
        f" first six queries {first:.1%}, last six {last:.1%}); contextual reading alone {before:.1%};"
        f" token-only embedder {_token_only(data):.1%}"
    )
    assert every > before
    # Measured: 86.1 % (even 83.3 %, odd 88.9 %; first six 87.5 %, last six 84.7 %). The contextual reading
    # alone placed 84.0 % (86.1 / 81.9). The halves differ by 3 to 5 points either way: the set is small
    # (72 queries a half, one query is 1.4 points), so the bar is on the whole set with a floor for each half.
    assert every >= 0.85
    assert min(even, odd, first, last) >= 0.80


def test_intent_scale__pairs_the_measurement_it_names(labelled, encoder):
    # SCALE is what its comment says: the median of the other intents' examples and of the intent's own
    # examples, on the even intents, re-measured here so a change of rule cannot leave a stale scale behind.
    data, models, _ = labelled
    examples = [encoder.encode(d["examples"]) for d in data]
    chosen = range(0, len(data), 2)
    low = np.median([e @ models[i].prototype for i in chosen for j, e in enumerate(examples) if j != i])
    high = np.median(np.concatenate([examples[i] @ models[i].prototype for i in chosen]))
    assert intents.SCALE[encoder.name] == pytest.approx((low, high), abs=0.01)
    everyday = encoder.encode(list(intents.SCALE_EVERYDAY))
    assert max(float(np.median(m.scores(everyday))) for m in models) == 0.0, "everyday words score 0"


def test_intents__prototype_from_the_name_alone__places_fewer(labelled, encoder):
    # The examples carry the intent: a prototype of the name alone must place fewer of the same queries.
    data, models, queries = labelled
    name_only = [
        intents.IntentModel(key=m.key, prototype=encoder.encode([d["name"]])[0], low=m.low, high=m.high)
        for m, d in zip(models, data, strict=True)
    ]

    def assign_full(v):
        return intents.intents_assign(models, v)

    def assign_name(v):
        return intents.intents_assign(name_only, v)

    every = range(len(data))
    assert _accuracy(assign_name, queries, every) < _accuracy(assign_full, queries, every)


def test_intent_scale__examples_near_1__everyday_words_near_0(labelled, encoder):
    data, models, _ = labelled
    trip = models[0]
    assert data[0]["name"] == "planning a trip"
    examples = trip.scores(encoder.encode(data[0]["examples"]))
    # The scale's top is the median example of the six intents it was measured on, so one of three
    # examples may sit lower ("hotel near the central station" 0.60); each is above the default threshold.
    assert examples.min() >= 0.5 and examples.mean() >= 0.75
    everyday = trip.scores(encoder.encode(["order status", "reset password", "gift card balance"]))
    assert everyday.max() <= 0.3
    # Everyday words the bare reading was not centered on (not in SCALE_EVERYDAY) score low all the same,
    # well under the default threshold: the centering is not a list of exceptions.
    unseen = ["forgot my password", "where is my refund", "update billing info", "unsubscribe from newsletter"]
    assert not set(unseen) & set(intents.SCALE_EVERYDAY)
    assert trip.scores(encoder.encode(unseen)).max() <= 0.1
    assert trip.scores(np.zeros((1, encoder.dims), dtype=np.float32)).tolist() == [0.0]


def test_profile_scores__recent_search__drives_the_score_and_is_named(labelled, encoder):
    _, models, _ = labelled
    events = [
        BehaviorEvent("search", NOW - timedelta(hours=1), {"query": "what documents do I need to enter thailand"}),
        BehaviorEvent("page_view", NOW - timedelta(days=2), {"title": "Order status"}),
        BehaviorEvent("search", NOW - timedelta(days=60), {"query": "cheap flights to lisbon"}),
    ]
    texts = intents.recent_texts(events, now=NOW)
    assert {t.text for t in texts} == {"what documents do i need to enter thailand", "order status"}  # 60 days: out
    vectors = dict(zip([t.text for t in texts], encoder.encode([t.text for t in texts]), strict=True))
    scores = intents.profile_scores(texts, vectors, models)
    trip, phrases = scores["0"]
    assert trip >= intents.DEFAULT_THRESHOLD
    assert phrases[0] == "what documents do i need to enter thailand" and len(phrases) <= intents.TOP_PHRASES
    assert max(score for key, (score, _) in scores.items() if key != "0") < trip
    # The same search a week older weighs half: the score fades when the intent is no longer expressed.
    older = intents.recent_texts([BehaviorEvent("search", NOW - timedelta(days=7), events[0].properties)], now=NOW)
    assert intents.profile_scores(older, vectors, models)["0"][0] == pytest.approx(trip / 2, abs=0.01)
    assert intents.profile_scores([], vectors, models)["0"] == (0.0, [])


def test_default_threshold__labelled_set__most_own_intent_queries_pass_it_few_others_do(labelled):
    _, models, queries = labelled
    threshold = intents.DEFAULT_THRESHOLD
    own, other = [], []
    for i, vectors in enumerate(queries):
        table = np.stack([m.scores(vectors) for m in models], axis=1)
        own.append(table[:, i])
        other.append(np.delete(table, i, axis=1).ravel())
    own, other = np.concatenate(own), np.concatenate(other)
    print(
        f"default threshold {threshold}: {(own >= threshold).mean():.1%} of queries reach it on their own intent"
        f" (lowest {own.min():.2f}), {(other >= threshold).mean():.1%} of query-other intent pairs"
        f" ({int((other >= threshold).sum())} of {other.size}, highest {other.max():.2f})"
    )
    # Measured: 61.1 % own (lowest 0.00), 1.1 % others (18 of 1,584, highest 0.55). No threshold separates
    # all of them; this holds the cut where few other needs pass it and most of an intent's own queries do.
    assert (other >= threshold).mean() <= 0.02
    assert (own >= threshold).mean() >= 0.55


def test_default_threshold__the_cut_of_intent_segments_and_lift_is_the_same():
    from personalization.segment_keys import INTENT_SOURCE_THRESHOLD

    assert intents.DEFAULT_THRESHOLD == INTENT_SOURCE_THRESHOLD == 0.35
    assert intents.PHRASES_FROM < intents.DEFAULT_THRESHOLD, "phrases are kept for everyone above the threshold"


def test_key_from_name__slug_conditions_can_name():
    assert intents.key_from_name("Planning a Trip!") == "planning-a-trip"
    assert intents.key_from_name("¿¿") == "intent"
    assert intents.KEY_PATTERN.fullmatch(intents.key_from_name("x" * 200))


@pytest.mark.parametrize(
    ("texts", "category"),
    [
        (["managing type 2 diabetes", "insulin pens", "glucose monitor"], "health"),
        (["pills for low mood", "feeling better again", "sleep at night"], "health"),
        (["where to pray on friday", "books for my faith", "holiday food"], "religion"),
        (["Wahl 2026 welche Partei", "Programme vergleichen", "Briefwahl"], "politics"),
        (["rencontres homosexuel paris", "bars", "soirées"], "sexuality"),
        (["dna test for my ethnic origin", "family tree", "heritage"], "ethnicity"),
    ],
)
def test_sensitive__special_categories__refused_with_the_reason(encoder, texts, category):
    finding = sensitive.sensitive_finding(texts, encoder.encode)
    assert finding is not None and finding.category == category
    assert finding.text in texts and "refused" in finding.message()


def test_sensitive__everyday_intents__accepted(encoder):
    everyday = json.loads(LABELLED.read_text())["intents"]
    for intent in everyday:
        assert sensitive.sensitive_finding([intent["name"], *intent["examples"]], encoder.encode) is None, intent
    for texts in (["trail race day nutrition", "hearing aids batteries", "roma tomatoes seeds"],):
        assert sensitive.sensitive_finding(texts, encoder.encode) is None
