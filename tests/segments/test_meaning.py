"""Meaning in behavior segments: texts read from events, encoded in the worker and cached, a meaning
vector per profile, combined with behavior for clustering, fold-in and lookalikes."""

from datetime import UTC, datetime, timedelta

import numpy as np
from sklearn.metrics import adjusted_rand_score

from personalization.people import selectors as people
from segments import meaning, services, text_encoder
from segments.embedding import DIMS, BehaviorEvent
from segments.models import ProfileMeaning, RunStatus, SegmentMembership, TextEmbedding
from segments.services import meaning as meaning_service
from segments.services.embeddings import embeddings_matrix

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _event(props: dict, days_ago: float = 0.0) -> BehaviorEvent:
    return BehaviorEvent("page_view", T0 - timedelta(days=days_ago), props)


# --- pure: which texts, how they weigh, how vectors combine ---------------------------------------


def test_event_texts__queries_titles_names__with_their_role_weight():
    texts = dict(
        meaning.event_texts(
            {
                "query": "Grippy soles for MUDDY paths",
                "title": "Trail shoes | Kairos shop",
                "category_code": "footwear.trail-shoes",
                "item": "ridgeline-trail-3",
                "items": [{"item_id": "SKU-123", "item_name": "Mudlark GTX"}],
                "url": "https://shop.example/p/1",
                "session_id": "abc",
            }
        )
    )
    assert texts == {
        "grippy soles for muddy paths": 1.0,
        "trail shoes kairos shop": 1.0,
        "footwear trail shoes": meaning.NAME_WEIGHT,
        "ridgeline trail 3": meaning.NAME_WEIGHT,
        "mudlark gtx": meaning.NAME_WEIGHT,
    }


def test_event_texts__ids_numbers_urls_and_junk__are_not_text():
    assert meaning.event_texts({"item": "8d6f0a9c-1b2e-4c3d-9f00-aa11bb22cc33", "product": 12345}) == []
    assert meaning.event_texts({"query": "", "title": "https://x.example", "q": "12 34"}) == []
    assert meaning.event_texts("not a mapping") == []


def test_profile_texts__recent_and_repeated_weigh_more():
    events = [_event({"query": "visa rules"}, 0), _event({"query": "visa rules"}, 1), _event({"query": "old idea"}, 28)]
    weights = meaning.profile_texts(events, half_life_days=14)
    assert weights["visa rules"] > 1.9 and abs(weights["old idea"] - 0.25) < 1e-6


def test_combine__cosine_is_weighted_mix_of_behavior_and_meaning_cosines():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(2, DIMS)).astype(np.float32)
    m = rng.normal(size=(2, 512)).astype(np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    z = meaning.combine(b, m, 0.4)
    assert np.allclose(z[0] @ z[1], 0.6 * (b[0] @ b[1]) + 0.4 * (m[0] @ m[1]), atol=1e-5)
    alone = meaning.combine(b, np.zeros_like(m), 0.4)  # no text: the behavior vector itself
    assert np.allclose(alone[:, :DIMS], b, atol=1e-6) and not alone[:, DIMS:].any()


def test_nearest_combined__from_stored_parts__same_as_cosine_to_the_unit_centers():
    rng = np.random.default_rng(1)
    b, m = rng.normal(size=(200, DIMS)), rng.normal(size=(200, 512))
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    m[::5] = 0  # some people without text
    centers = rng.normal(size=(6, DIMS + 512)).astype(np.float32)
    parts = [meaning.split_center(c, DIMS) for c in centers]
    got = meaning.nearest_combined(
        b, m, 0.3, np.array([p[0] for p in parts]), np.array([p[1] for p in parts]), np.array([p[2] for p in parts])
    )
    unit_centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    assert np.array_equal(got, np.argmax(meaning.combine(b, m, 0.3) @ unit_centers.T, axis=1))


# --- the worker: cache, refit, fold-in, opt-out ------------------------------------------------------


class CountingEncoder:
    """The real encoder, counting the texts it is asked to encode (to see the cache at work)."""

    def __init__(self):
        self.inner = text_encoder.encoder_load()
        self.name, self.dims, self.encoded = self.inner.name, self.inner.dims, 0

    def encode(self, texts):
        self.encoded += len(texts)
        return self.inner.encode(texts)


def test_text_vectors__second_time__served_from_the_cache(db):
    encoder = CountingEncoder()
    texts = ["visa rules for japan", "travel insurance asia", "visa rules for japan"]
    # The cache is shared by every project (and by other tests' committed data): count these texts' rows.
    digests = {text_encoder.text_digest(t) for t in texts}
    TextEmbedding.objects.filter(encoder=encoder.name, digest__in=digests).delete()
    first = meaning_service.text_vectors(texts=texts, encoder=encoder)
    assert encoder.encoded == 2 and TextEmbedding.objects.filter(encoder=encoder.name, digest__in=digests).count() == 2
    again = meaning_service.text_vectors(texts=[*texts, "hotel near the station"], encoder=encoder)
    assert encoder.encoded == 3  # only the new text
    assert np.allclose(first["visa rules for japan"], again["visa rules for japan"], atol=1e-6)
    stored = TextEmbedding.objects.get(digest=text_encoder.text_digest("visa rules for japan"))
    assert np.allclose(np.asarray(stored.vector), encoder.inner.encode(["visa rules for japan"])[0], atol=1e-5)


def test_refit__every_embedded_person_gets_a_meaning_vector_from_their_texts(refitted):
    rows = ProfileMeaning.objects.filter(project=refitted)
    ids, _ = embeddings_matrix(project_id=refitted.pk)
    assert set(rows.values_list("profile_id", flat=True)) == set(ids.tolist())
    vectors = np.asarray([v for v in rows.values_list("vector", flat=True)[:200]], dtype=np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Texts are encoded once: the cache holds one row per distinct text, however many people share it.
    assert TextEmbedding.objects.count() < rows.count()


def test_clustering__with_meaning__recovers_planted_intents_better_than_behavior_alone(refitted, settings):
    """Acceptance: on the demo, clustering on behavior plus meaning raises the adjusted Rand index
    against the planted intents over behavior alone (both printed)."""

    def ari(weight: float) -> float:
        settings.SEGMENTS_MEANING_WEIGHT = weight
        run = services.clustering_run_execute(run_id=services.clustering_run_request(project=refitted, k=8).pk)
        assert run.status == RunStatus.DONE, run.error
        assert run.meaning_weight == weight
        labels = dict(SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", "segment__key"))
        truth = people.profiles_planted_intent(project_id=refitted.pk, profile_ids=labels)
        ids = sorted(labels)
        return adjusted_rand_score([truth[i] for i in ids], [labels[i] for i in ids])

    behavior, with_meaning = ari(0.0), ari(0.4)
    print(f"\ndemo, k=8: ARI behavior only {behavior:.3f}, with meaning (weight 0.4) {with_meaning:.3f}")
    assert with_meaning > behavior + 0.01


def test_lookalike__with_meaning__built_by_exact_scan_without_the_seed(refitted, settings):
    settings.SEGMENTS_MEANING_WEIGHT = settings.SEGMENTS_LOOKALIKE_MEANING_WEIGHT = 0.4
    run = services.clustering_run_execute(run_id=services.clustering_run_request(project=refitted, k=8).pk)
    # The segment most made of yoga fans, found by who is in it rather than by its suggested name: which
    # words name a segment moves with the data of the day (the demo ends today).
    segment = max(run.segments.all(), key=lambda s: _planted_share(refitted, s, "yoga_fan"))
    assert _planted_share(refitted, segment, "yoga_fan") > 0.5
    seed = services.seed_from_segment(project_id=refitted.pk, segment_key=segment.key)
    built = services.lookalike_build(project=refitted, seed=seed, size=100, name="Like yoga fans")
    members = dict(SegmentMembership.objects.filter(segment=built).values_list("profile_id", "score"))
    assert len(members) == 100 and not set(members) & set(seed.weights)
    assert all(-1.0 <= score <= 1.0 for score in members.values())
    # Most yoga fans are in the seed; those left must be found far above their share of the rest.
    ids, _ = embeddings_matrix(project_id=refitted.pk)
    rest = [int(p) for p in ids if int(p) not in seed.weights]
    truth = people.profiles_planted_intent(project_id=refitted.pk, profile_ids=rest)
    base = sum(truth[p] == "yoga_fan" for p in rest) / len(rest)
    found = sum(truth[p] == "yoga_fan" for p in members) / len(members)
    print(f"\nlookalike of the yoga segment with meaning: {found:.0%} yoga fans in 100, {base:.1%} among the rest")
    assert found > 3 * base


def _planted_share(project, segment, intent: str) -> float:
    members = list(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))
    truth = people.profiles_planted_intent(project_id=project.pk, profile_ids=members)
    return sum(truth[p] == intent for p in members) / max(len(members), 1)
