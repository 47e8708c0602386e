"""Named intents end to end: saved over REST (refusals named), people scored in the worker after the
drain with the phrases that drove it, published to decide's hash, and never kept for the opted out."""

import zipfile
from datetime import timedelta

import numpy as np
import orjson
import pytest
from django.utils import timezone

from personalization import redis_client, rkeys
from personalization import selectors as people_selectors
from personalization import services as personalization_services
from personalization.decide import runtime as decide_runtime
from personalization.intent_fields import UNIT_INTENTS_FIELD
from personalization.models import ProfileIdentity
from personalization.people.personal_data import locations
from personalization.people.subjects import profiles_personalization_set
from privacy import services as privacy_services
from segments import intents, services
from segments.models import Intent, ProfileIntent
from segments.services import intents as intents_service
from tests import factories

pytestmark = pytest.mark.django_db

TRIP = {"name": "planning a trip", "examples": ["visa rules for japan", "travel insurance", "hotel near the station"]}


def _post(client, key: str, url: str, body) -> tuple[int, dict]:
    response = client.post(
        url, data=orjson.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    return response.status_code, (response.json() if response.content else {})


def _searches(client, public_key: str, visitor: str, queries: list[str]) -> None:
    events = [factories.behavior_event_make("search", visitor, query=q) for q in queries]
    assert factories.events_post(client, public_key, events).status_code == 200


def _profile(project, visitor: str) -> int:
    return ProfileIdentity.objects.get(project=project, value=visitor).profile_id


def _field(project, visitor: str) -> str | None:
    raw = redis_client.worker().hget(rkeys.unit(project.pk, visitor), UNIT_INTENTS_FIELD)
    return raw.decode() if raw is not None else None


def test_intent__drained_search__scored_named_published_and_targeted(
    client, project, public_key, secret_key, django_capture_on_commit_callbacks
):
    status, body = _post(client, secret_key, "/api/v1/intents/", TRIP)
    assert status == 201 and body["key"] == "planning-a-trip" and body["threshold"] == intents.DEFAULT_THRESHOLD == 0.35
    _searches(client, public_key, "traveller", ["visa and travel insurance for thailand", "gift card balance"])
    _searches(client, public_key, "shopper", ["order status", "gift card balance"])
    queued = redis_client.worker().llen("celery")
    assert personalization_services.events_drain() == 4
    assert redis_client.worker().llen("celery") >= queued + 1, "the drain queues the intent scoring"
    traveller, shopper = _profile(project, "traveller"), _profile(project, "shopper")
    # What the queued task runs, in the worker:
    assert services.intents_score(project_id=project.pk, profile_ids=[traveller, shopper]) == {
        "scored": 2,
        "removed": 0,
    }
    rows = {r.profile_id: r for r in ProfileIntent.objects.filter(project=project)}
    # A score of 0 keeps no row (nothing of the intent in their words); the field says 0 all the same.
    assert rows[traveller].score >= intents.DEFAULT_THRESHOLD > (rows[shopper].score if shopper in rows else 0.0)
    assert rows[traveller].phrases[0] == "visa and travel insurance for thailand"
    # The scores, then the text that drove the intent (for decide's explain), percent-encoded.
    score = f"planning-a-trip={rows[traveller].score:.2f}".replace(".00", "")
    assert (
        _field(project, "traveller") == f"{score} why:planning-a-trip=visa%20and%20travel%20insurance%20for%20thailand"
    )
    # The count the API reports is the database's.
    listed = client.get("/api/v1/intents/", HTTP_AUTHORIZATION=f"Bearer {secret_key}").json()
    above = ProfileIntent.objects.filter(intent__key="planning-a-trip", score__gte=intents.DEFAULT_THRESHOLD).count()
    assert [i["people_above"] for i in listed] == [above] == [1]

    personalization_services.project_holdout_set(project=project, share=0)
    factories.targeted_experience_start(project=project, key="trip-banner", conditions="intent planning-a-trip >= 0.35")
    personalization_services.snapshot_publish(project_id=project.pk)

    def reason(unit: str) -> str:
        return decide_runtime.decide(project.pk, {"anonymous_id": unit})["assignments"]["trip-banner"]["reason"]

    assert (reason("traveller"), reason("shopper"), reason("never-seen")) == (
        "fixed_split",
        "targeting_miss",
        "targeting_miss",
    )


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"examples": ["a trip", "visa", "hotel"]}, "name", "give the intent a name"),
        ({**TRIP, "examples": ["visa rules", "hotel"]}, "examples", "give 3 to 20 different example phrases"),
        ({**TRIP, "examples": ["visa", "visa", "hotel"]}, "examples", "(got 2)"),
        ({**TRIP, "examples": [*TRIP["examples"], "x" * 201]}, "examples[3]", "keep each phrase to 200"),
        ({**TRIP, "examples": [*TRIP["examples"], "12345"]}, "examples[3]", "letters"),
        ({**TRIP, "threshold": 2}, "threshold", "between 0 and 1"),
        ({**TRIP, "key": "Planning Trip"}, "key", "lowercase letters, digits and hyphens"),
        ({**TRIP, "colour": "red"}, "colour", "is not a field of an intent"),
        ({"name": "managing diabetes", "examples": TRIP["examples"]}, "name", "is about health"),
        ({**TRIP, "examples": ["pills for low mood", "travel", "hotel"]}, "examples[0]", "refused"),
        ({"name": "church events", "examples": TRIP["examples"]}, "name", "is about religion"),
    ],
)
def test_intent_create__unusable__400_names_the_field_and_saves_nothing(client, secret_key, body, field, words):
    status, answer = _post(client, secret_key, "/api/v1/intents/", body)
    assert status == 400
    assert answer["error"]["field"] == field and words in answer["error"]["message"]
    assert not Intent.objects.exists()


def test_intent_api__update_key_taken_delete_and_other_project(client, project, secret_key, other_project):
    assert _post(client, secret_key, "/api/v1/intents/", TRIP)[0] == 201
    second = {"name": "getting a puppy", "examples": ["puppy food", "dog crate", "lead training"]}
    assert _post(client, secret_key, "/api/v1/intents/", second)[0] == 201
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    taken = client.patch(
        "/api/v1/intents/getting-a-puppy/",
        data=orjson.dumps({"key": "planning-a-trip"}),
        content_type="application/json",
        **auth,
    )
    assert taken.status_code == 400 and taken.json()["error"]["field"] == "key"
    changed = client.patch(
        "/api/v1/intents/getting-a-puppy/",
        data=orjson.dumps({"threshold": 0.55}),
        content_type="application/json",
        **auth,
    )
    assert changed.status_code == 200 and changed.json()["threshold"] == 0.55
    other_key = factories.key_make(project=other_project, kind="secret")
    assert client.get("/api/v1/intents/planning-a-trip/", HTTP_AUTHORIZATION=f"Bearer {other_key}").status_code == 404
    assert client.delete("/api/v1/intents/planning-a-trip/", **auth).status_code == 204
    assert list(Intent.objects.filter(project=project).values_list("key", flat=True)) == ["getting-a-puppy"]


def test_intent_preview__nearest_real_queries_and_people_above(client, project, public_key, secret_key):
    _searches(client, public_key, "a", ["cheap flights to lisbon in may", "passport renewal how long"])
    _searches(client, public_key, "b", ["order status", "reset password"])
    _searches(client, public_key, "c", ["kettlebell swing form"])
    personalization_services.events_drain()
    status, answer = _post(client, secret_key, "/api/v1/intents/preview/", TRIP)
    assert status == 200 and answer["texts_searched"] == 5
    nearest = [row["text"] for row in answer["nearest"]]
    assert set(nearest[:2]) == {"cheap flights to lisbon in may", "passport renewal how long"}
    # Person a (on-intent searches) at or above the default threshold, b (everyday words) and c not.
    assert answer["threshold"] == intents.DEFAULT_THRESHOLD and answer["people_above"] == 1
    by_text = {row["text"]: row["score"] for row in answer["nearest"]}
    assert by_text["passport renewal how long"] >= intents.DEFAULT_THRESHOLD
    assert max(by_text["order status"], by_text["reset password"], by_text["kettlebell swing form"]) == 0.0
    assert not Intent.objects.exists(), "a preview saves nothing"
    status, answer = _post(client, secret_key, "/api/v1/intents/preview/", {**TRIP, "examples": ["visa"]})
    assert status == 400 and answer["error"]["field"] == "examples"


def test_intent_preview__more_people_than_it_reads__estimates_from_a_sample(
    client, project, public_key, secret_key, monkeypatch
):
    # Six people search for travel, six for everyday things; the preview may read only four of them.
    for n in range(12):
        _searches(client, public_key, f"p{n}", ["passport renewal how long"] if n % 2 else ["order status"])
    personalization_services.events_drain()
    travellers = {_profile(project, f"p{n}") for n in range(1, 12, 2)}
    monkeypatch.setattr(intents_service, "PREVIEW_PEOPLE", 4)
    status, answer = _post(client, secret_key, "/api/v1/intents/preview/", TRIP)
    assert status == 200 and answer["people_estimated"] is True and answer["people_sampled"] == 4
    sample, everyone = people_selectors.profiles_recent_sample(
        project_id=project.pk, since=timezone.now() - timedelta(days=365), size=4
    )
    assert everyone == 12
    # The travellers among the four read, scaled to the twelve.
    assert answer["people_above"] == 3 * len(travellers & set(sample))
    monkeypatch.setattr(intents_service, "PREVIEW_PEOPLE", 100)
    status, answer = _post(client, secret_key, "/api/v1/intents/preview/", TRIP)
    assert answer["people_estimated"] is False and answer["people_sampled"] == 12 and answer["people_above"] == 6


def test_intents__opted_out__scores_gone_and_never_computed_again(
    client, project, public_key, django_capture_on_commit_callbacks
):
    services.intent_create(project_id=project.pk, **TRIP)
    _searches(client, public_key, "traveller", ["travel insurance for asia", "cabin luggage allowance"])
    personalization_services.events_drain()
    traveller = _profile(project, "traveller")
    services.intents_score(project_id=project.pk, profile_ids=[traveller])
    assert ProfileIntent.objects.filter(profile_id=traveller).exists() and _field(project, "traveller")
    with django_capture_on_commit_callbacks(execute=True):
        profiles_personalization_set(project_id=project.pk, profile_ids=[traveller], do_not_personalize=True)
    assert not ProfileIntent.objects.filter(profile_id=traveller).exists()
    assert _field(project, "traveller") is None
    # A later drain of their events scores them no more.
    _searches(client, public_key, "traveller", ["visa rules for japan"])
    personalization_services.events_drain()
    assert services.intents_score(project_id=project.pk, profile_ids=[traveller]) == {"scored": 0, "removed": 1}
    assert not ProfileIntent.objects.filter(profile_id=traveller).exists() and _field(project, "traveller") is None


def test_intents__registered_as_profiling_data_in_postgresql_and_redis():
    by_name = {location.name: location for location in locations()}
    assert by_name["intent_scores"].profiling and by_name["decide_intents"].profiling
    assert "phrases" in by_name["intent_scores"].columns


def test_intents_page__preview_partial_save_refusal_and_delete(client, project, public_key):
    client.force_login(factories.member_make(project=project, role="marketer"))
    empty = client.get("/segments/intents/").content.decode()
    assert 'name="threshold" value="0.35"' in empty and "0.35 by default" in empty
    _searches(client, public_key, "a", ["passport renewal how long", "order status"])
    personalization_services.events_drain()
    form = {"name": TRIP["name"], "examples": "\n".join(TRIP["examples"]), "threshold": "0.35"}
    partial = client.post("/segments/intents/", {**form, "action": "preview"}, HTTP_HX_REQUEST="true")
    body = partial.content.decode()
    assert partial.status_code == 200 and 'id="intent-preview-result"' in body and "<html" not in body
    assert body.index("passport renewal how long") < body.index("order status")
    assert "<strong>1</strong> people would score 0.35 or more" in body
    refused = client.post("/segments/intents/", {**form, "name": "church events", "action": "save"})
    assert refused.status_code == 400 and "name: “church events” is about religion" in refused.content.decode()
    saved = client.post("/segments/intents/", {**form, "action": "save"}, follow=True)
    assert "Intent “planning a trip” saved (planning-a-trip)" in saved.content.decode()
    assert Intent.objects.filter(project=project, key="planning-a-trip").exists()
    assert 'id="intents-link"' in client.get("/segments/").content.decode()
    client.post("/segments/intents/planning-a-trip/delete")
    assert not Intent.objects.filter(project=project).exists()


def test_seed_from_intent__people_at_or_above_the_threshold_weighted_by_score(client, project, public_key):
    services.intent_create(project_id=project.pk, **TRIP)
    _searches(client, public_key, "traveller", ["visa and travel insurance for thailand"])
    _searches(client, public_key, "shopper", ["order status"])
    personalization_services.events_drain()
    ids = [_profile(project, "traveller"), _profile(project, "shopper")]
    services.intents_score(project_id=project.pk, profile_ids=ids)
    seed = services.seed_from_intent(project_id=project.pk, intent_key="planning-a-trip")
    stored = ProfileIntent.objects.get(profile_id=ids[0]).score
    assert seed.weights == {ids[0]: stored} and seed.description["kind"] == "intent"
    with pytest.raises(services.SegmentsError) as caught:
        services.seed_from_intent(project_id=project.pk, intent_key="nope")
    assert caught.value.field == "seed_intent"


def test_intents_rescore__everyone_scored_and_a_deleted_intent_leaves_the_field(client, project, public_key):
    services.intent_create(project_id=project.pk, **TRIP)
    puppy = services.intent_create(
        project_id=project.pk, name="getting a puppy", examples=["puppy food", "dog crate", "lead training"]
    )
    _searches(client, public_key, "traveller", ["visa and travel insurance for thailand"])
    _searches(client, public_key, "dog", ["best chew toys for a teething puppy"])
    personalization_services.events_drain()
    assert services.intents_rescore_all() == 2
    dog = _field(project, "dog")
    assert "planning-a-trip=0" in dog.split() and "getting-a-puppy=0." in dog
    services.intent_delete(intent=puppy)
    assert services.intents_rescore(project_id=project.pk) == 2
    assert "getting-a-puppy" not in _field(project, "dog")
    assert _field(project, "traveller").startswith("planning-a-trip=")
    assert not ProfileIntent.objects.filter(intent_id=puppy.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_intents_privacy__export_holds_them_objection_and_erasure_remove_them(client, project, public_key):
    services.intent_create(project_id=project.pk, **TRIP)
    for who in ("traveller", "other"):
        _searches(client, public_key, who, ["visa and travel insurance for thailand"])
    personalization_services.events_drain()
    ids = {who: _profile(project, who) for who in ("traveller", "other")}
    services.intents_score(project_id=project.pk, profile_ids=list(ids.values()))

    def request(kind: str):
        return factories.privacy_request_make(project=project, kind=kind, anonymous_id="traveller")

    with zipfile.ZipFile(privacy_services.subject_export(request=request("access"))) as archive:
        located = orjson.loads(archive.read("data.json"))["locations"]
    stored = ProfileIntent.objects.get(profile_id=ids["traveller"])
    assert [(r["intent__key"], r["score"], r["phrases"]) for r in located["intent_scores"]] == [
        ("planning-a-trip", stored.score, stored.phrases)
    ]
    published = {"planning-a-trip": round(stored.score, 2)}
    assert located["decide_intents"] == [{"unit_id": "traveller", "intents": published}]
    privacy_services.subject_object(request=request("objection"))
    assert not ProfileIntent.objects.filter(profile_id=ids["traveller"]).exists()
    assert _field(project, "traveller") is None and _field(project, "other") is not None
    assert ProfileIntent.objects.filter(profile_id=ids["other"]).exists()
    privacy_services.subject_erase(request=request("erasure"))
    assert not ProfileIntent.objects.filter(profile_id=ids["traveller"]).exists()


def test_intent_saved_under_the_old_rule__encoded_again_before_scoring_and_everyone_rescored(
    client, project, public_key, django_capture_on_commit_callbacks
):
    from personalization.models import AuditEntry
    from segments import text_encoder

    intent = services.intent_create(project_id=project.pk, **TRIP)
    encoder = text_encoder.encoder_load()
    fresh = intents.intent_model(key="x", name=TRIP["name"], examples=TRIP["examples"], encode=encoder.encode,
                                 encoder=encoder.name).prototype  # fmt: skip
    # As an intent saved before this rule stands in the database: the contextual reading alone, no rule.
    old = text_encoder.prototype(encoder.encode([f"{e} ({TRIP['name']})" for e in TRIP["examples"]]))
    Intent.objects.filter(pk=intent.pk).update(rule="", prototype=old)
    _searches(client, public_key, "traveller", ["passport renewal how long"])
    _searches(client, public_key, "shopper", ["order status"])
    personalization_services.events_drain()
    traveller = _profile(project, "traveller")
    with django_capture_on_commit_callbacks(execute=False) as queued:
        services.intents_score(project_id=project.pk, profile_ids=[traveller])
    intent.refresh_from_db()
    assert intent.rule == intents.RULE and np.allclose(np.asarray(intent.prototype), fresh, atol=1e-5)
    assert len(queued) == 1, "everyone scored with the old prototype is scored again"
    # The score stored is the new prototype's, not the old one's (they differ for this search).
    vector = encoder.encode(["passport renewal how long"])
    new_score, old_score = (
        float(intents.IntentModel("x", p, *intents.SCALE[encoder.name]).scores(vector)[0]) for p in (fresh, old)
    )
    assert abs(new_score - old_score) > 0.03
    assert ProfileIntent.objects.get(profile_id=traveller).score == pytest.approx(new_score, abs=0.005)
    entry = AuditEntry.objects.get(project=project, object_type="intent", action="update")
    assert entry.actor is None and intents.RULE in entry.changes["prototype"]
    with django_capture_on_commit_callbacks(execute=False) as again:
        services.intents_score(project_id=project.pk, profile_ids=[traveller])
    assert not again and AuditEntry.objects.filter(object_type="intent", action="update").count() == 1

    # The rescore path (after a save, nightly) encodes a stale intent first and needs no second rescore.
    Intent.objects.filter(pk=intent.pk).update(rule="", prototype=old)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert services.intents_rescore(project_id=project.pk) == 2
    intent.refresh_from_db()
    assert intent.rule == intents.RULE and not queued
    assert ProfileIntent.objects.get(profile_id=traveller).score == pytest.approx(new_score, abs=0.005)
