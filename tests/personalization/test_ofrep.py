"""OFREP (OpenFeature Remote Evaluation Protocol) on the decide service: the OpenFeature Python SDK with
the OFREP provider against the real decide server, answers compared with decide's, the bulk ETag,
and the error codes."""

import time

import orjson
import pytest
import requests
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from personalization import redis_client, rkeys, services
from personalization.decide import ofrep
from tests.factories import flag_experiences_start, key_make, project_make, stream_exposures

DEADLINE_SECONDS = 10


def _until(condition, what: str):
    """Poll `condition` until it returns something truthy (the decide server writes behind ~50 ms)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.02)
    raise AssertionError(f"not within {DEADLINE_SECONDS} s: {what}")


def _post(url: str, key: str, body, **headers) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return requests.post(url, data=data, headers={"Authorization": f"Bearer {key}", **headers}, timeout=10)


@pytest.fixture
def flags_project(transactional_db):
    project = project_make(name="Flags")
    flag_experiences_start(project=project)
    return project, key_make(project=project, kind="public")


@pytest.fixture
def of_client(decide_server, flags_project):
    _, key = flags_project
    api.set_provider(OFREPProvider(decide_server, headers_factory=lambda: {"Authorization": f"Bearer {key}"}), "kairos")
    yield api.get_client("kairos")
    api.clear_providers()


@pytest.mark.slow
def test_openfeature_sdk__real_decide_server__values_variants_and_reasons(of_client, flags_project):
    project, _ = flags_project
    variants = {e.key: {v.key: v.payload for v in e.variants.all()} for e in project.experiences.all()}
    seen_reasons = set()
    for n in range(12):
        context = EvaluationContext(targeting_key=f"user-{n}", attributes={"plan": "gold" if n % 2 else "free"})
        hero = of_client.get_object_details("hero", {"headline": "code default"}, context)
        assert hero.error_code is None, hero.error_message
        assert hero.value == variants["hero"][hero.variant]  # an object payload is the value
        seen_reasons.add(hero.flag_metadata["kairosReason"])
        color = of_client.get_string_details("color", "code default", context)
        assert color.value == color.variant and color.variant in variants["color"]  # no payload: the variant key
        beta = of_client.get_string_details("beta", "code default", context)
        assert beta.value == variants["beta"][beta.variant]  # a string payload is the value, not the key
        gold = of_client.get_object_details("gold", {}, context)
        if n % 2 == 0 and gold.flag_metadata["kairosReason"] != "holdout_global":  # the holdout is checked first
            assert (gold.reason, gold.variant, gold.flag_metadata["kairosReason"]) == (
                Reason.TARGETING_MATCH,
                "gold-0",
                "targeting_miss",
            )
        else:
            assert gold.reason == Reason.SPLIT
    assert seen_reasons & {"holdout_global", "holdout_experience"} and "fixed_split" in seen_reasons

    missing = of_client.get_string_details("no-such-flag", "fallback", EvaluationContext(targeting_key="user-1"))
    assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
    no_key = of_client.get_string_details("color", "fallback", EvaluationContext(attributes={"plan": "gold"}))
    assert (no_key.value, no_key.error_code) == ("fallback", ErrorCode.TARGETING_KEY_MISSING)
    too_long = of_client.get_string_details("color", "fallback", EvaluationContext(targeting_key="x" * 129))
    assert (too_long.value, too_long.error_code) == ("fallback", ErrorCode.INVALID_CONTEXT)
    assert "targetingKey" in too_long.error_message


@pytest.mark.slow
def test_ofrep__exposures_recorded_as_decide_records_them(of_client, decide_server, flags_project):
    project, key = flags_project
    of_client.get_object_details("hero", {}, EvaluationContext(targeting_key="via-ofrep"))
    assert _post(f"{decide_server}/api/v1/decide", key, {"user_id": "via-decide", "experiences": ["hero"]}).ok

    def both():
        by_unit = {e["user_id"]: e for e in stream_exposures(project.pk)}
        return by_unit if {"via-ofrep", "via-decide"} <= set(by_unit) else None

    found = _until(both, "an exposure for the OFREP and the decide unit in the events stream")
    ofrep_event, decide_event = found["via-ofrep"], found["via-decide"]
    same = ("type", "anonymous_id", "session_id")
    assert {k: ofrep_event[k] for k in same} == {k: decide_event[k] for k in same}
    assert set(ofrep_event["properties"]) == set(decide_event["properties"])
    assert ofrep_event["properties"]["source"] == "decide" and ofrep_event["properties"]["experience"] == "hero"
    assert len([e for e in stream_exposures(project.pk) if e["user_id"] == "via-ofrep"]) == 1  # only "hero" asked


@pytest.mark.slow
def test_ofrep__answers_equal_decide_for_the_same_units(decide_server, flags_project):
    project, key = flags_project
    decide_url, bulk_url = f"{decide_server}/api/v1/decide", f"{decide_server}/ofrep/v1/evaluate/flags"
    compared = 0
    for n in range(10):
        unit, attributes = f"cmp-{n}", {"plan": "gold" if n % 3 else "free", "device": "mobile"}
        first = _post(decide_url, key, {"user_id": unit, "context": attributes}).json()
        # Once the first call's sticky marks are written, decide's answer stays what it is: compare then.
        # They are one HSET of the unit's hash; hero (no targeting) always leaves one.
        _until(lambda u=unit: "a:hero" in _unit_fields(project.pk, u), f"{unit}'s sticky marks in Redis")
        answer = _post(decide_url, key, {"user_id": unit, "context": attributes}).json()
        bulk = _post(bulk_url, key, {"context": {"targetingKey": unit, **attributes}}).json()
        by_key = {flag["key"]: flag for flag in bulk["flags"]}
        assert set(by_key) == set(answer["assignments"]) == {"hero", "color", "beta", "gold"}
        assert bulk["metadata"]["version"] == str(answer["version"])
        for flag_key, assignment in answer["assignments"].items():
            single = _post(f"{bulk_url}/{flag_key}", key, {"context": {"targetingKey": unit, **attributes}}).json()
            assert single == by_key[flag_key] == ofrep.flag(flag_key, assignment)
            assert single["variant"] == assignment["variant"] == first["assignments"][flag_key]["variant"]
            assert single["metadata"]["kairosReason"] == assignment["reason"]
            compared += 1
    assert compared == 40


def _unit_fields(project_id: int, unit: str) -> list[str]:
    return [k.decode() for k in redis_client.worker().hkeys(rkeys.unit(project_id, unit))]


@pytest.mark.slow
def test_ofrep_bulk__etag__304_while_unchanged_200_after_an_edit(decide_server, flags_project):
    project, key = flags_project
    url, body = f"{decide_server}/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "etag-1", "plan": "gold"}}
    first = _post(url, key, body)
    assert first.status_code == 200 and first.headers["ETag"].startswith('W/"')
    # The second evaluation finds the first's sticky assignments (kairosReason fixed_split → sticky):
    # the flags do not change, so neither does the tag.
    again = _post(url, key, body, **{"If-None-Match": first.headers["ETag"]})
    assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", first.headers["ETag"])

    services.experience_pause(experience=project.experiences.get(key="beta"))
    services.snapshot_publish(project_id=project.pk)
    changed = _until(
        lambda: (r := _post(url, key, body, **{"If-None-Match": first.headers["ETag"]})).status_code == 200 and r,
        "the decide server's answer after the edit",
    )
    assert {f["key"] for f in changed.json()["flags"]} == {"hero", "color", "gold"}
    assert changed.headers["ETag"] != first.headers["ETag"]


@pytest.mark.slow
def test_ofrep__errors__codes_and_statuses_of_the_spec(decide_server, flags_project):
    _, key = flags_project
    url = f"{decide_server}/ofrep/v1/evaluate/flags"
    cases = [
        (f"{url}/hero", b"{not json", 400, "PARSE_ERROR"),
        (f"{url}/hero", {"context": "user-1"}, 400, "INVALID_CONTEXT"),
        (f"{url}/hero", {"context": {"plan": "gold"}}, 400, "TARGETING_KEY_MISSING"),
        (f"{url}/hero", {"context": {"targetingKey": "u", "attributes": [1]}}, 400, "INVALID_CONTEXT"),
        (f"{url}/nope", {"context": {"targetingKey": "u"}}, 404, "FLAG_NOT_FOUND"),
        (url, {"context": {}}, 400, "TARGETING_KEY_MISSING"),
    ]
    for target, body, status, code in cases:
        response = _post(target, key, body)
        assert (response.status_code, response.json()["errorCode"]) == (status, code), (target, body)
        assert response.json()["errorDetails"]
        if target != url:
            assert response.json()["key"] == target.rsplit("/", 1)[1]
    by_api_key = requests.post(
        f"{url}/hero", json={"context": {"targetingKey": "u"}}, headers={"X-API-Key": key}, timeout=10
    )
    assert by_api_key.status_code == 200 and by_api_key.json()["key"] == "hero"
    assert requests.post(f"{url}/hero", json={"context": {"targetingKey": "u"}}, timeout=10).status_code == 401
    assert _post(f"{url}/hero", "kp_unknown", {"context": {"targetingKey": "u"}}).status_code == 401


def test_ofrep_etag__weak_comparison_lists_and_star():
    body, etag = ofrep.bulk({"version": 3, "assignments": {}, "unknown_experiences": []})
    assert body == {"flags": [], "metadata": {"version": "3"}}
    assert ofrep.etag_matches(etag, etag) and ofrep.etag_matches(f'"x", {etag.removeprefix("W/")}', etag)
    assert ofrep.etag_matches("*", etag) and not ofrep.etag_matches('W/"other"', etag)
    assert not ofrep.etag_matches("", etag)


def test_ofrep_flag__value_is_the_payload_or_the_variant_key():
    assignment = {"variant": "b", "payload": {"x": 1}, "reason": "sticky", "version": 2}
    assert ofrep.flag("k", assignment) == {
        "key": "k",
        "value": {"x": 1},
        "reason": "SPLIT",
        "variant": "b",
        "metadata": {"kairosReason": "sticky", "experienceVersion": 2},
    }
    assert ofrep.flag("k", {**assignment, "payload": {}})["value"] == "b"
    assert ofrep.flag("k", {**assignment, "payload": 0})["value"] == 0  # a falsy payload is still the payload
    degraded = ofrep.flag("k", {"variant": None, "payload": None, "reason": "fallback", "version": None})
    assert "value" not in degraded and degraded["reason"] == "UNKNOWN"  # the provider uses the code default
    assert set(ofrep.REASONS.values()) <= {"STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"}
