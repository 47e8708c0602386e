"""Live intent end to end: events sent to the events API change what decide answers next, through
targeting conditions saved on the experience, compiled into the snapshot and evaluated from the
unit hash decide already reads; every exposure records the stage and the facts used."""

import subprocess
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from personalization import redis_client, rkeys, services
from personalization.decide import runtime as decide_runtime
from personalization.models import Exposure, Project
from tests.factories import events_post, key_make, live_state_read, project_make

ABANDONED = "session.cart_adds >= 1 and session.purchases = 0"


def _experience(project, key: str, conditions: str) -> None:
    services.experience_create(
        project=project,
        key=key,
        name=key.title(),
        touchpoint="banner",
        variants=[
            {"key": "off", "payload": {"banner": ""}, "is_control": True, "weight": 0},
            {"key": "on", "payload": {"banner": "free returns"}, "weight": 1},
        ],
        targeting={"conditions": conditions},
    )
    services.experience_start(experience=project.experiences.get(key=key))


def _shop(project) -> None:
    """No global holdout, so every visitor's answer says what targeting decided."""
    services.project_holdout_set(project=project, share=0)
    _experience(project, "returns-banner", ABANDONED)
    _experience(project, "compare-help", "stage = comparing")
    services.snapshot_publish(project_id=project.pk)


def _event(etype: str, visitor: str, **properties) -> dict:
    event = {
        "event_id": uuid.uuid4().hex,
        "type": etype,
        "anonymous_id": visitor,
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": properties,
    }
    if etype == "purchase":
        event["value"] = 59.9
    if etype == "page_view":
        properties.setdefault("url", f"/p/{properties.get('item', '')}")
    return event


def _send(client, key: str, events: list[dict]) -> None:
    response = events_post(client, key, events)
    assert response.status_code == 200 and response.json()["accepted"] == len(events), response.content


def _decide(client, key: str, body: dict) -> dict:
    response = client.post(
        "/api/v1/decide", data=orjson.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 200, response.content
    return response.json()


def _reason(answer: dict, key: str) -> str:
    return answer["assignments"][key]["reason"]


@pytest.mark.django_db
def test_cart_add_then_purchase__condition_matches_after_the_add_and_not_after_the_purchase(
    client, project, public_key
):
    _shop(project)
    visitor = "v-cart"
    assert _reason(_decide(client, public_key, {"anonymous_id": visitor}), "returns-banner") == "targeting_miss"

    _send(client, public_key, [_event("page_view", visitor, url="/p/1", item="shoe-1")])
    assert _reason(_decide(client, public_key, {"anonymous_id": visitor}), "returns-banner") == "targeting_miss"

    _send(client, public_key, [_event("add_to_cart", visitor, item="shoe-1")])
    matched = _decide(client, public_key, {"anonymous_id": visitor})["assignments"]["returns-banner"]
    assert matched["variant"] == "on" and matched["reason"] == "fixed_split"

    _send(client, public_key, [_event("purchase", visitor, item="shoe-1")])
    after = _decide(client, public_key, {"anonymous_id": visitor})["assignments"]["returns-banner"]
    # Targeting is checked before the sticky assignment: once bought, the banner goes.
    assert after == {**after, "variant": "off", "reason": "targeting_miss"}


@pytest.mark.django_db
def test_three_items_of_one_category__stage_comparing_matches(client, project, public_key):
    _shop(project)
    visitor = "v-compare"
    for n in range(1, 4):
        _send(client, public_key, [_event("page_view", visitor, item=f"shoe-{n}", category="trail-shoes")])
        reason = _reason(_decide(client, public_key, {"anonymous_id": visitor}), "compare-help")
        assert (reason == "fixed_split") == (n == 3), f"after {n} items: {reason}"


@pytest.mark.django_db
def test_decide_reads_the_live_state_in_its_one_round_trip_and_no_sql(client, project, public_key):
    _shop(project)
    _send(client, public_key, [_event("add_to_cart", "v-rt", item="x")])
    _decide(client, public_key, {"anonymous_id": "v-warm"})  # the snapshot is loaded
    sent = []
    execute = decide_runtime.unit_reads.execute

    def counting(*commands, **where):
        sent.append(commands)
        return execute(*commands, **where)

    decide_runtime.unit_reads.execute = counting
    try:
        with CaptureQueriesContext(connection) as queries:
            answer = decide_runtime.decide(project.pk, {"anonymous_id": "v-rt"})
    finally:
        decide_runtime.unit_reads.execute = execute
    assert answer["assignments"]["returns-banner"]["variant"] == "on"
    assert len(sent) == 1 and sent[0][0] == ("HGETALL", rkeys.unit(project.pk, "v-rt"))
    assert len(queries) == 0


@pytest.mark.django_db
def test_every_exposure_records_stage_and_the_facts_used__holdouts_too__stored_by_the_drain(
    client, project, public_key
):
    _shop(project)
    experience = project.experiences.get(key="returns-banner")
    services.experience_update(experience=experience, holdout_share=0.5)
    services.snapshot_publish(project_id=project.pk)
    visitors = [f"v-x{n}" for n in range(40)]
    for visitor in visitors:
        _send(client, public_key, [_event("add_to_cart", visitor, item="shoe", category="trail-shoes")])
        _decide(client, public_key, {"anonymous_id": visitor, "experiences": ["returns-banner"]})
    decide_runtime.buffer.flush()
    while services.events_drain(claim_idle_ms=0):
        pass
    rows = list(Exposure.objects.filter(project=project, experience_key="returns-banner").values("arm", "live"))
    assert len(rows) == len(visitors)
    assert {row["arm"] for row in rows} == {"variant", "holdout_experience"}
    for row in rows:
        live = row["live"]
        assert live["stage"] == "deciding" and live["visitor"] == "new" and live["first_touch"] == "direct"
        assert live["session.cart_adds"] == 1 and live["session.purchases"] == 0 and live["tenure_days"] == 0
        assert live["device"] in ("mobile", "tablet", "desktop")  # for the Lift page's device breakdown


@pytest.mark.django_db
def test_exposure_without_redis_records_live_as_unknown(project):
    from personalization.decide import engine

    _shop(project)
    snapshot = orjson.loads(redis_client.worker().get(rkeys.snapshot(project.pk)))
    engine.conditions_prepare(snapshot)
    decision = engine.decide_unit(snapshot, "v-fb", {}, {}, ["compare-help"], fallback=True)
    assert decision.assignments["compare-help"]["reason"] == "targeting_miss"
    with_state = engine.decide_unit(snapshot, "v-fb", {}, {}, None, live=lambda: {"stage": "comparing"})
    assert with_state.exposures[0]["live"]["stage"] == "comparing"


@pytest.mark.django_db
def test_hostile_inputs__decide_keeps_answering(client, project, public_key):
    _shop(project)
    client_redis = redis_client.worker()
    client_redis.hset(rkeys.unit(project.pk, "v-garbage"), "ls", "{not json")
    client_redis.hset(rkeys.unit(project.pk, "v-wrong"), "ls", orjson.dumps({"v": 1, "c": "x", "t": 5, "sl": "soon"}))
    client_redis.hset(rkeys.unit(project.pk, "v-types"), "ls", orjson.dumps({"v": 1, "ca": "many", "pu": [1]}))
    contexts = [
        {"device": 5, "url": ["x"], "utm": "cpc", "referrer": "h" * 2000},
        {"url": "http://[::1", "referrer": "::::", "utm": {"medium": 3, "source": None}},
        {"attributes": {"stage": "bought"}, "device": "TABLET"},
    ]
    for visitor in ("v-garbage", "v-wrong", "v-types", "v-new"):
        for context in contexts:
            answer = _decide(client, public_key, {"anonymous_id": visitor, "context": context})
            assert set(answer["assignments"]) == {"returns-banner", "compare-help"}
    # 2,000 distinct categories and items in one batch: the state stays bounded, decide answers.
    batch = [_event("page_view", "v-many", item=f"i{n}" * 20, category=f"c{n}" * 20) for n in range(2000)]
    for start in range(0, len(batch), 500):
        _send(client, public_key, batch[start : start + 500])
    assert len(client_redis.hget(rkeys.unit(project.pk, "v-many"), "ls")) < 2000
    # 2,000 distinct items viewed: comparing (items viewed >= 5), counted up to the cap.
    assert _reason(_decide(client, public_key, {"anonymous_id": "v-many"}), "compare-help") == "fixed_split"


@pytest.mark.django_db
def test_events__redis_refuses_the_live_update__answer_as_usual_and_the_events_are_queued(client, project, public_key):
    _shop(project)
    # A real Redis error in the live update: the unit's key holds a string, so the script's HMGET
    # fails with WRONGTYPE (that unit is skipped and logged; the batch's other units go on).
    redis_client.worker().set(rkeys.unit(project.pk, "v-down"), "not a hash")
    queued = int(redis_client.worker().hget(rkeys.EVENTS_QUEUED, project.pk) or 0)
    response = events_post(client, public_key, [_event("add_to_cart", "v-down", item="x")])
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert set(response.json()) == {"accepted", "rejected", "dropped_noise", "duplicates", "warnings"}
    assert int(redis_client.worker().hget(rkeys.EVENTS_QUEUED, project.pk)) == queued + 1
    assert redis_client.worker().get(rkeys.unit(project.pk, "v-down")) == b"not a hash"


@pytest.mark.django_db
def test_events__throttled_or_capped_batch__leaves_the_live_state_unchanged(client, project, public_key, settings):
    _shop(project)
    _send(client, public_key, [_event("page_view", "v-retry", item="a")])  # the project's snapshot is known
    settings.KAIROS_EVENTS_PER_KEY_PER_SECOND = 3
    # 8 batches: whatever second boundary they straddle, one window holds more than 3.
    codes = [
        events_post(client, public_key, [_event("page_view", "v-retry", item=f"i{n}")]).status_code for n in range(8)
    ]
    assert 429 in codes and set(codes) <= {200, 429}
    state = live_state_read(project.pk, "v-retry")
    assert state["pv"] == 1 + codes.count(200), "a refused batch is not counted, so its retry counts once"

    settings.KAIROS_EVENTS_PER_KEY_PER_SECOND = 0
    settings.KAIROS_STREAM_CAP_PER_PROJECT = 1
    assert events_post(client, public_key, [_event("page_view", "v-retry", item="x")]).status_code == 503
    again = live_state_read(project.pk, "v-retry")
    assert again == state


@pytest.mark.django_db
def test_events__redis_forgot_the_ingest_script__the_batch_is_queued_and_counted_once(client, project, public_key):
    _shop(project)
    _send(client, public_key, [_event("page_view", "v-flush", item="a")])  # the project's snapshot is known
    queued = int(redis_client.worker().hget(rkeys.EVENTS_QUEUED, project.pk))
    redis_client.worker().script_flush()  # what a Redis restart does to the scripts it knew
    _send(client, public_key, [_event("page_view", "v-flush", item="b")])
    assert int(redis_client.worker().hget(rkeys.EVENTS_QUEUED, project.pk)) == queued + 1
    assert live_state_read(project.pk, "v-flush")["pv"] == 2


@pytest.mark.django_db
def test_events__live_state_switched_off__events_queued_and_no_state_written(client, project, public_key, settings):
    _shop(project)
    settings.KAIROS_LIVE_STATE = False
    queued = int(redis_client.worker().hget(rkeys.EVENTS_QUEUED, project.pk) or 0)
    _send(client, public_key, [_event("add_to_cart", "v-off", item="x")])
    assert int(redis_client.worker().hget(rkeys.EVENTS_QUEUED, project.pk)) == queued + 1
    assert not redis_client.worker().hexists(rkeys.unit(project.pk, "v-off"), "ls")
    assert _reason(_decide(client, public_key, {"anonymous_id": "v-off"}), "returns-banner") == "targeting_miss"

    settings.KAIROS_LIVE_STATE = True
    _send(client, public_key, [_event("add_to_cart", "v-off", item="x")])
    assert _reason(_decide(client, public_key, {"anonymous_id": "v-off"}), "returns-banner") == "fixed_split"


@pytest.mark.django_db
def test_rest__bad_condition__400_naming_targeting_conditions_and_the_condition(client, project, secret_key):
    body = {
        "key": "bad",
        "name": "Bad",
        "touchpoint": "banner",
        "targeting": {"conditions": "session.cart_adz >= 1"},
        "variants": [{"key": "a", "is_control": True}, {"key": "b"}],
    }
    response = client.post(
        "/api/v1/experiences/",
        data=orjson.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "targeting.conditions"
    assert "session.cart_adz >= 1" in error["message"] and "did you mean session.cart_adds" in error["message"]
    assert not project.experiences.exists()


@pytest.mark.django_db
def test_project_live_settings__errors_name_the_field__valid_ones_reach_the_snapshot(project):
    bad = [
        ({"live_idle_minutes": 2}, "live_idle_minutes"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"journey": {"comparing": {"items_in_one_category": 0}}}, "journey.comparing.items_in_one_category"),
        ({"journey": {"comparing": {"purchases": 2}}}, "journey.comparing.purchases"),
        ({"journey": {"shopping": {}}}, "journey.shopping"),
    ]
    for change, field in bad:
        arguments = {"live_idle_minutes": 30, "time_zone": "UTC", "journey": {}, **change}
        with pytest.raises(services.ProjectError) as caught:
            services.project_live_update(project=project, **arguments)
        assert caught.value.field == field
    project.refresh_from_db()
    assert (project.live_idle_minutes, project.time_zone, project.journey) == (30, "UTC", {})
    services.project_live_update(
        project=project, live_idle_minutes=45, time_zone="Europe/Paris", journey={"comparing": {"items_viewed": 4}}
    )
    snapshot = services.snapshot_compile(project_id=project.pk)
    assert snapshot["live"]["idle_minutes"] == 45 and snapshot["live"]["time_zone"] == "Europe/Paris"
    comparing = next(rule for rule in snapshot["live"]["journey"] if rule["stage"] == "comparing")
    assert comparing["any"]["items_viewed"] == 4
    assert Project.objects.get(pk=project.pk).journey == {"comparing": {"items_viewed": 4}}


def _curl(url: str, key: str, body_file) -> dict:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            "-H",
            f"Authorization: Bearer {key}",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f"@{body_file}",
            url,
        ],
        capture_output=True,
        check=True,
    )
    return orjson.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the server process sees what the test writes
def test_real_server__curl__cart_add_then_purchase_changes_the_answer(web_server, tmp_path):
    project = project_make(name="Live curl")
    key = key_make(project=project, kind="public")
    _shop(project)
    visitor = "v-curl"
    files = {}
    for name, body in {
        "decide": {"anonymous_id": visitor, "experiences": ["returns-banner"]},
        "add": {"events": [_event("add_to_cart", visitor, item="shoe-1")]},
        "buy": {"events": [_event("purchase", visitor, item="shoe-1")]},
    }.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_bytes(orjson.dumps(body))
    decide_url, events_url = f"{web_server}/api/v1/decide", f"{web_server}/api/v1/events"
    # The server loads the snapshot on its first call; the answer is then a miss (no cart yet).
    assert _curl(decide_url, key, files["decide"])["assignments"]["returns-banner"]["reason"] == "targeting_miss"
    assert _curl(events_url, key, files["add"])["accepted"] == 1
    assert _curl(decide_url, key, files["decide"])["assignments"]["returns-banner"]["variant"] == "on"
    assert _curl(events_url, key, files["buy"])["accepted"] == 1
    assert _curl(decide_url, key, files["decide"])["assignments"]["returns-banner"]["reason"] == "targeting_miss"
