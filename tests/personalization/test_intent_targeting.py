"""Intents in targeting: "intent <key> >= 0.4" read as a sentence, refused with a clear message when it
cannot work (unknown intent, score outside 0 to 1), evaluated by decide from the hash it already reads."""

import subprocess

import orjson
import pytest

from personalization import redis_client, rkeys, services
from personalization.decide import engine
from personalization.decide import runtime as decide_runtime
from personalization.experiences.conditions import (
    ConditionError,
    condition_function,
    condition_intents,
    condition_parse,
    condition_text,
)
from personalization.intent_fields import UNIT_INTENTS_FIELD, intents_pack, intents_parse
from segments import services as segments_services
from segments.models import Intent
from tests import factories

TRIP = {"name": "planning a trip", "examples": ["visa rules for japan", "travel insurance", "hotel near the station"]}


def test_condition__intent__parses_reads_back_and_evaluates():
    compiled = condition_parse("intent planning-a-trip >= 0.4 and not intent[getting-married] > 0.5")
    assert condition_text(compiled) == "intent planning-a-trip >= 0.4 and not intent getting-married > 0.5"
    assert condition_intents(compiled) == {"planning-a-trip", "getting-married"}
    check = condition_function(compiled)
    assert check(intents_parse("planning-a-trip=0.62 getting-married=0.1"))
    assert not check(intents_parse("planning-a-trip=0.62 getting-married=0.9"))
    assert not check(intents_parse("planning-a-trip=0.2"))
    # Not scored (no field): unknown, so even "< 0.4" is false, as for predictive scores.
    assert not condition_function(condition_parse("intent planning-a-trip < 0.4"))({})


def test_intent_field__pack_and_parse__round_trip_and_junk_left_out():
    assert intents_pack({"b": 0.0, "a": 1.0, "c": 0.4567}) == "a=1 b=0 c=0.46"
    assert intents_parse("a=1 b=0 c=0.46") == {"intent[]": {"a": 1.0, "b": 0.0, "c": 0.46}}
    assert intents_parse("a=2 B=0.5 c=x d=0.3") == {"intent[]": {"d": 0.3}}
    assert intents_parse(None) == {} and intents_parse("") == {}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("intent >= 0.4", "intent needs the key of one of the project's intents"),
        ("intent Planning_Trip >= 0.4", "intent needs the key"),
        ("intent planning-a-trip >= 40", "an intent's score runs from 0 to 1"),
        ("intent planning-a-trip top 10%", '"top" goes after a score'),
        ("intent planning-a-trip in a, b", "is a number"),
    ],
)
def test_condition__bad_intent__error_names_the_fix(text, words):
    with pytest.raises(ConditionError, match=words):
        condition_parse(text)


@pytest.mark.django_db
def test_experience_save__unknown_intent__400_names_the_condition(project):
    with pytest.raises(services.ExperienceError) as caught:
        factories.targeted_experience_start(project=project, key="trip", conditions="intent planning-a-trip >= 0.4")
    assert caught.value.field == "targeting.conditions"
    assert "no intent “planning-a-trip” in this project" in caught.value.message
    segments_services.intent_create(project_id=project.pk, **TRIP)
    factories.targeted_experience_start(project=project, key="trip", conditions="intent planning-a-trip >= 0.4")


@pytest.mark.django_db
def test_decide__intent_condition__matches_from_the_unit_hash_in_its_one_round_trip(project):
    segments_services.intent_create(project_id=project.pk, **TRIP)
    services.project_holdout_set(project=project, share=0)
    factories.targeted_experience_start(project=project, key="trip", conditions="intent planning-a-trip >= 0.4")
    services.snapshot_publish(project_id=project.pk)
    client = redis_client.worker()
    client.hset(rkeys.unit(project.pk, "keen"), UNIT_INTENTS_FIELD, "planning-a-trip=0.71")
    client.hset(rkeys.unit(project.pk, "cold"), UNIT_INTENTS_FIELD, "planning-a-trip=0.12")
    client.hset(rkeys.unit(project.pk, "junk"), UNIT_INTENTS_FIELD, "planning-a-trip=lots")

    def reason(unit: str) -> str:
        return decide_runtime.decide(project.pk, {"anonymous_id": unit})["assignments"]["trip"]["reason"]

    assert [reason(u) for u in ("keen", "cold", "junk", "stranger")] == [
        "fixed_split",
        "targeting_miss",
        "targeting_miss",
        "targeting_miss",
    ]


def test_unit_segment__intent_source__yes_no_or_unknown_from_the_hash():
    source = {"segment_field": "intent:planning-a-trip"}
    # The cut is the intents' default threshold, 0.35: at it "yes", just under "no".
    assert engine.unit_segment(source, {UNIT_INTENTS_FIELD: "planning-a-trip=0.35"}, {}) == "yes"
    assert engine.unit_segment(source, {UNIT_INTENTS_FIELD: "planning-a-trip=0.34 other=0.9"}, {}) == "no"
    assert engine.unit_segment(source, {UNIT_INTENTS_FIELD: "other=0.9"}, {}) == ""
    assert engine.unit_segment(source, {}, {}) == ""


def _bandit(project, key: str, source: str):
    return services.experience_create(
        project=project,
        key=key,
        name=key.title(),
        touchpoint="banner",
        variants=[{"key": "a", "payload": {}, "is_control": True}, {"key": "b", "payload": {"x": 1}}],
        policy="segment_bandit",
        segment_attribute=source,
    )


@pytest.mark.django_db
def test_experience_save__intent_bandit_source__unknown_400_known_compiled(project):
    with pytest.raises(services.ExperienceError) as caught:
        _bandit(project, "by-intent", "intent:planning-a-trip")
    assert caught.value.field == "segment_attribute" and "no intent “planning-a-trip”" in caught.value.message
    segments_services.intent_create(project_id=project.pk, **TRIP)
    services.experience_start(experience=_bandit(project, "by-intent", "intent:planning-a-trip"))
    compiled = services.snapshot_compile(project_id=project.pk)["experiences"]["by-intent"]
    assert compiled["segment_field"] == "intent:planning-a-trip"


def _curl_json(url: str, key: str, method: str = "GET", body_path=None) -> tuple[int, dict | list]:
    command = ["curl", "-sS", "-X", method, "-w", "\n%{http_code}", url, "-H", f"Authorization: Bearer {key}"]
    if body_path is not None:
        command += ["-H", "Content-Type: application/json", "--data-binary", f"@{body_path}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), (orjson.loads(body) if body.strip() else {})


@pytest.mark.django_db(transaction=True)
def test_intents_over_http__curl_with_a_file_body__saved_refused_and_counted_as_in_the_database(web_server, tmp_path):
    project = factories.project_make(name="Intents over HTTP")
    key = factories.key_make(project=project, kind="secret")
    good, bad = tmp_path / "trip.json", tmp_path / "health.json"
    good.write_bytes(orjson.dumps(TRIP))
    bad.write_bytes(orjson.dumps({**TRIP, "name": "managing diabetes"}))
    status, created = _curl_json(f"{web_server}/api/v1/intents/", key, "POST", good)
    assert status == 201 and created["key"] == "planning-a-trip" and created["people_above"] == 0
    status, refused = _curl_json(f"{web_server}/api/v1/intents/", key, "POST", bad)
    assert status == 400 and refused["error"]["field"] == "name" and "health" in refused["error"]["message"]
    status, listed = _curl_json(f"{web_server}/api/v1/intents/", key)
    assert status == 200 and [i["key"] for i in listed] == ["planning-a-trip"]
    assert len(listed) == Intent.objects.filter(project=project).count()
