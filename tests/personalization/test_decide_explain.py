"""Decide's `explain: true`: a short reason for a personalized variant, made from what decide already read
in its one round trip; without it the answer is unchanged; anything but a boolean is refused by name."""

import subprocess

import orjson
import pytest
from django.utils import timezone

from personalization import redis_client, rkeys, services
from personalization.decide import runtime as decide_runtime
from personalization.decide.explain import assignment_explanation
from personalization.experiences.conditions import condition_parse
from personalization.intent_fields import UNIT_INTENTS_FIELD, WHY_MAX_CHARS, intents_pack, intents_parse, intents_why
from segments import services as segments_services
from segments.models import ClusteringRun, RunStatus, Segment, SegmentKind
from tests import factories

TRIP = {"name": "planning a trip", "examples": ["visa rules for japan", "travel insurance", "hotel near the station"]}
CARD = {"over_index": [{"feature": "page_view · category: trail-shoes", "ratio": 5.2}], "more": [], "less": []}


def _exp(conditions: str | None = None, **targeting) -> dict:
    return {"targeting": targeting, "conditions": condition_parse(conditions) if conditions else None}


def _facts(**facts):
    return lambda: facts


def test_explanation__true_parts_of_the_condition_in_words():
    exp = _exp("session.category_views[trail-shoes] >= 2 and stage in comparing, deciding")
    facts = _facts(**{"session.category_views[]": {"trail-shoes": 3}, "stage": "comparing"})
    answer = {"reason": "fixed_split"}
    assert assignment_explanation(exp, answer, {}, facts) == "because you viewed trail shoes and you are comparing"
    # An "or" gives its branch that held; a "not" is no reason.
    either = _exp("visitor = returning or sessions_30d >= 3 and not device = tablet")
    both = _facts(visitor="new", sessions_30d=4, device="mobile")
    assert assignment_explanation(either, answer, {}, both) == "because you visited 4 times this month"


def test_explanation__intent_with_its_driving_text_or_its_name():
    exp = _exp("intent planning-a-trip >= 0.4")
    field = intents_pack({"planning-a-trip": 0.8, "other": 0.1}, why={"planning-a-trip": "visa rules for japan"})
    facts = _facts(**intents_parse(field))
    user = {UNIT_INTENTS_FIELD: field}
    assert (
        assignment_explanation(exp, {"reason": "sticky"}, user, facts)
        == "because you looked for “visa rules for japan”"
    )
    bare = {UNIT_INTENTS_FIELD: intents_pack({"planning-a-trip": 0.8})}
    assert (
        assignment_explanation(exp, {"reason": "bandit"}, bare, facts)
        == "because you seem interested in planning a trip"
    )


def test_explanation__segment_trait_and_nothing_for_unpersonalized_answers():
    exp = _exp(segments=["b3.1", "b3.2"]) | {"why_segments": {"b3.2": "viewed trail-shoes pages"}}
    user = {"segs": "b3.2 b9.0"}
    expected = "because you browse like people who viewed trail-shoes pages"
    assert assignment_explanation(exp, {"reason": "fixed_split"}, user, _facts()) == expected
    for reason in ("targeting_miss", "holdout_global", "not_personalized", "fallback"):
        assert assignment_explanation(exp, {"reason": reason}, user, _facts()) is None
    # A variant drawn for everyone: nothing targeted it, so nothing to say.
    assert assignment_explanation(_exp(), {"reason": "fixed_split"}, user, _facts()) is None


def test_intent_field__why_pairs__bounded_and_invisible_to_the_scores():
    long = "x" * 200
    field = intents_pack(
        {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}, why={"a": "visa = rules for japan", "b": long, "c": "c", "d": "d"}
    )
    assert intents_parse(field) == {"intent[]": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}}
    why = intents_why(field)
    assert why == {"a": "visa = rules for japan", "b": "x" * WHY_MAX_CHARS, "c": "c"}  # the three highest scores
    assert intents_why(None) == {} and intents_why("a=0.5 why:Bad=x why:a=") == {}


@pytest.mark.django_db
def test_decide__explain__validated_by_name_and_without_it_the_answer_is_unchanged(project, django_assert_num_queries):
    services.project_holdout_set(project=project, share=0)
    factories.targeted_experience_start(project=project, key="trail", conditions="session.category_views[trail] >= 1")
    services.snapshot_publish(project_id=project.pk)
    for bad in ("yes", 1, None, [True]):
        with pytest.raises(decide_runtime.DecideInputError) as caught:
            decide_runtime.decide(project.pk, {"anonymous_id": "v", "explain": bad})
        assert caught.value.field == "explain"
    plain = decide_runtime.decide(project.pk, {"anonymous_id": "v"})
    off = decide_runtime.decide(project.pk, {"anonymous_id": "v", "explain": False})
    with django_assert_num_queries(0):
        on = decide_runtime.decide(project.pk, {"anonymous_id": "v", "explain": True})
    for answer in (plain, off, on):
        answer.pop("decision_id")
    assert orjson.dumps(plain) == orjson.dumps(off)
    assert "explanation" not in orjson.dumps(plain).decode()
    assert on["assignments"]["trail"] == plain["assignments"]["trail"] | {"explanation": None}


def _curl(url: str, key: str, body_file) -> tuple[int, dict]:
    command = ["curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", url, "-H", f"Authorization: Bearer {key}"]
    command += ["-H", "Content-Type: application/json", "--data-binary", f"@{body_file}"]
    out = subprocess.run(command, capture_output=True, check=True, text=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), orjson.loads(body)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the server process sees what the test writes
def test_real_server__curl__explain_true_gives_reasons_for_intent_and_segment_and_400_names_the_field(
    web_server, tmp_path
):
    project = factories.project_make(name="Explain curl")
    key = factories.key_make(project=project, kind="public")
    services.project_holdout_set(project=project, share=0)
    segments_services.intent_create(project_id=project.pk, **TRIP)
    factories.targeted_experience_start(project=project, key="trip", conditions="intent planning-a-trip >= 0.4")
    run = ClusteringRun.objects.create(project=project, status=RunStatus.DONE, k=2, finished_at=timezone.now())
    Segment.objects.create(
        project=project, key=f"b{run.pk}.0", kind=SegmentKind.BEHAVIOR, run=run, name="Trail", card=CARD
    )
    services.experience_create(
        project=project,
        key="trail",
        name="Trail",
        touchpoint="hero",
        variants=[
            {"key": "off", "payload": {}, "is_control": True, "weight": 0},
            {"key": "on", "payload": {}, "weight": 1},
        ],
        targeting={"segments": [f"b{run.pk}.0"]},
    )
    services.experience_start(experience=project.experiences.get(key="trail"))
    services.snapshot_publish(project_id=project.pk)
    field = intents_pack({"planning-a-trip": 0.8}, why={"planning-a-trip": "visa rules for japan"})
    redis_client.worker().hset(
        rkeys.unit(project.pk, "fan"), mapping={UNIT_INTENTS_FIELD: field, "segs": f"b{run.pk}.0"}
    )
    files = {}
    for name, body in {
        "explain": {"anonymous_id": "fan", "explain": True},
        "plain": {"anonymous_id": "fan"},
        "bad": {"anonymous_id": "fan", "explain": "yes"},
    }.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_bytes(orjson.dumps(body))
    url = f"{web_server}/api/v1/decide"
    status, answer = _curl(url, key, files["explain"])
    assert status == 200
    assert answer["assignments"]["trip"]["explanation"] == "because you looked for “visa rules for japan”"
    assert (
        answer["assignments"]["trail"]["explanation"] == "because you browse like people who viewed trail-shoes pages"
    )
    status, plain = _curl(url, key, files["plain"])
    assert status == 200 and all("explanation" not in a for a in plain["assignments"].values())
    # The same variants; the reason may have become "sticky" once the first answer's assignment was stored.
    variants = {k: (a["variant"], a["payload"], a["version"]) for k, a in answer["assignments"].items()}
    assert {k: (a["variant"], a["payload"], a["version"]) for k, a in plain["assignments"].items()} == variants
    status, refused = _curl(url, key, files["bad"])
    assert status == 400 and "explain" in orjson.dumps(refused).decode()
