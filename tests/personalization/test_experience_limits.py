"""Issue 16.2: every JSON a person or program enters into an experience gets the limits of events
(depth, size, storable characters), REST and dashboard alike, naming the field and writing nothing;
and one experience decide cannot serve is left out of the snapshot, reported on its page, its list
row and in REST, while the rest of the project keeps publishing."""

import json
import subprocess

import orjson
import pytest

from personalization import redis_client, rkeys, services
from personalization.experiences.limits import (
    EXPERIENCE_MAX_CHARS,
    PAYLOAD_MAX_CHARS,
    PAYLOAD_MAX_DEPTH,
    payload_check,
)
from personalization.ingest.schema import FieldError
from personalization.models import AuditEntry, Experience, ExperienceStatus, Role, Variant
from tests import factories

pytestmark = pytest.mark.django_db


def nested(depth: int, leaf: object = "deep") -> dict:
    """{"a": {"a": ... leaf}} with `depth` objects."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_text(depth: int) -> str:
    """The JSON text of nested(depth), built as text: Python's json cannot write a thousand levels."""
    return '{"a": ' * depth + '"deep"' + "}" * depth


TEN_MB = "x" * (10 * 1024 * 1024)


def counts() -> tuple[int, int, int]:
    return Experience.objects.count(), Variant.objects.count(), AuditEntry.objects.count()


def body(payload_text: str, **extra) -> bytes:
    """An experience create body whose second variant's payload is `payload_text` (JSON text)."""
    head = {
        "key": "deep",
        "name": "Deep",
        "variants": [{"key": "a", "is_control": True, "payload": {"ok": 1}}, {"key": "b", "payload": None}],
        **extra,
    }
    return orjson.dumps(head).replace(b'"payload":null', b'"payload":' + payload_text.encode())


def rest(client, method: str, url: str, key: str, data: bytes):
    return getattr(client, method)(url, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def experience_make(project, key: str, start: bool = True, payload: object = None) -> Experience:
    experience = services.experience_create(
        project=project,
        key=key,
        name=key.title(),
        touchpoint="hero",
        variants=[
            {"key": "control", "payload": {"headline": f"{key} control"}, "is_control": True},
            {"key": "b", "payload": payload if payload is not None else {"headline": f"{key} b"}},
        ],
    )
    return services.experience_start(experience=experience) if start else experience


def published(project) -> dict:
    """The snapshot decide reads from Redis."""
    return orjson.loads(redis_client.worker().get(rkeys.snapshot(project.pk)))


def decide(client, public_key) -> dict:
    data = b'{"anonymous_id": "v1"}'
    return client.post(
        "/api/v1/decide", data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {public_key}"
    ).json()


# --- The pure check -----------------------------------------------------------------------------


def test_payload_check__at_the_limits__accepted_one_past__named_error():
    assert payload_check(nested(PAYLOAD_MAX_DEPTH), "p") > 0
    with pytest.raises(FieldError) as deep:
        payload_check(nested(PAYLOAD_MAX_DEPTH + 1), "variants[1].payload")
    assert deep.value.field.startswith("variants[1].payload.a") and "32 levels" in deep.value.message
    payload_check({"t": "x" * (PAYLOAD_MAX_CHARS - 10)}, "p")
    with pytest.raises(FieldError) as big:
        payload_check({"t": "x" * PAYLOAD_MAX_CHARS}, "variants[0].payload")
    assert big.value.field == "variants[0].payload" and "behind a URL" in big.value.message


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (nested(600), "p.a.a.a", "nested too deep"),
        ({"n": float("nan")}, "p.n", "finite"),
        ({"n": 10**30}, "p.n", "too large"),
        ({"k\x00": 1}, "p (a key)", "NUL"),
        ({"k": "v\ud800"}, "p.k", "lone surrogate"),
        ({"\udfff": 1}, "p (a key)", "lone surrogate"),
    ],
)
def test_payload_check__hostile_values__named(payload, field, words):
    with pytest.raises(FieldError) as err:
        payload_check(payload, "p")
    assert err.value.field.startswith(field) and words in err.value.message


# --- REST ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload_text", "words"),
    [(nested_text(600), "nested too deep"), (json.dumps({"html": TEN_MB}), "characters as JSON")],
    ids=["600-deep", "10MB"],
)
def test_rest_create__payload_too_deep_or_large__400_naming_it_nothing_written(
    client, project, secret_key, payload_text, words
):
    before = counts()
    answer = rest(client, "post", "/api/v1/experiences/", secret_key, body(payload_text))
    assert answer.status_code == 400, answer.content[:300]
    error = answer.json()["error"]
    assert error["field"].startswith("variants[1].payload") and words in error["message"]
    assert counts() == before


def test_rest_create__nested_deeper_than_python_reads__400_not_500(client, project, secret_key):
    before = counts()
    answer = rest(client, "post", "/api/v1/experiences/", secret_key, body(nested_text(100_000)))
    assert answer.status_code == 400 and "nested too deep" in answer.content.decode()
    assert counts() == before


@pytest.mark.parametrize(
    ("payload_text", "words"),
    [(nested_text(600), "nested too deep"), (json.dumps({"html": TEN_MB}), "characters as JSON")],
    ids=["600-deep", "10MB"],
)
def test_rest_patch__payload_too_deep_or_large__400_naming_it_experience_unchanged(
    client, project, secret_key, payload_text, words
):
    experience = experience_make(project, "hero")
    before, version = counts(), experience.version
    data = b'{"variants": [{"key": "a", "is_control": true}, {"key": "b", "payload": ' + payload_text.encode() + b"}]}"
    answer = rest(client, "patch", "/api/v1/experiences/hero/", secret_key, data)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"].startswith("variants[1].payload")
    assert words in answer.json()["error"]["message"]
    assert counts() == before
    experience.refresh_from_db()
    assert experience.version == version
    assert sorted(experience.variants.values_list("key", flat=True)) == ["b", "control"]


def test_rest_patch__good_payload__saved_and_shown(client, project, secret_key):
    experience_make(project, "hero")
    data = orjson.dumps({"variants": [{"key": "a", "is_control": True}, {"key": "b", "payload": nested(32)}]})
    answer = rest(client, "patch", "/api/v1/experiences/hero/", secret_key, data)
    assert answer.status_code == 200, answer.content
    assert answer.json()["variants"][1]["payload"] == nested(32) and answer.json()["compile_error"] is None


@pytest.mark.parametrize(
    ("payload_text", "field"),
    [
        ('{"t": "x\\u0000"}', "variants[1].payload.t"),
        ('{"x\\u0000": 1}', "variants[1].payload (a key)"),
        ('{"t": "a\\ud800b"}', "variants[1].payload.t"),
        ('{"\\udc00": 1}', "variants[1].payload (a key)"),
        ('{"n": 1e999}', "variants[1].payload"),  # DRF's JSONField refuses infinity itself
        ('{"n": 100000000000000000000000000000}', "variants[1].payload.n"),
    ],
)
def test_rest_create__hostile_payload__400_naming_it_nothing_written(client, project, secret_key, payload_text, field):
    before = counts()
    answer = rest(client, "post", "/api/v1/experiences/", secret_key, body(payload_text))
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["field"].startswith(field)
    assert counts() == before


@pytest.mark.parametrize(
    ("targeting", "field"),
    [
        ({"attributes": [{"attribute": "country", "values": ["DE\x00"]}]}, "targeting.attributes[0].values[0]"),
        ({"attributes": [{"attribute": "co\ud800", "values": ["DE"]}]}, "targeting.attributes[0].attribute"),
        ({"attributes": [{"attribute": "country", "values": [nested(600)]}]}, "targeting.attributes[0].values[0]"),
        ({"attributes": [{"attribute": "country", "values": ["x" * 20_000]}]}, "targeting"),
        ({"attributes": [{"attribute": "country", "values": [{"a": 1}]}]}, "targeting.attributes[0].values"),
        ({"attributes": [{"op": "in"}]}, "targeting.attributes[0]"),
    ],
)
def test_rest_create__hostile_targeting__400_naming_it(client, project, secret_key, targeting, field):
    before = counts()
    # Lone surrogates cannot be written by orjson: the body is built with Python's json, as a client would.
    data = json.dumps(
        {"key": "t", "name": "T", "variants": [{"key": "a", "is_control": True}, {"key": "b"}], "targeting": targeting}
    ).encode()
    answer = rest(client, "post", "/api/v1/experiences/", secret_key, data)
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["field"].startswith(field)
    assert counts() == before


# --- Dashboard form -----------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, project):
    client.force_login(factories.member_make(project=project, role=Role.ADMIN))
    return client


def form_data(payload_text: str, **overrides) -> dict:
    """The experience form with no targeting and `payload_text` as the second variant's payload."""
    fields = {"holdout_share": "0", "cond-attribute": [""], "cond-op": ["in"], "cond-values": [""]}
    fields |= {"variant-key": ["control", "b"], "variant-name": ["Control", "B"], "variant-weight": ["1", "1"]}
    return factories.experience_form_data(**fields | {"variant-payload": ["{}", payload_text]} | overrides)


@pytest.mark.parametrize(
    ("payload_text", "words"),
    [
        (nested_text(600), "nested too deep"),
        (nested_text(5000), "nested too deep"),
        (json.dumps({"html": TEN_MB}), "characters as JSON"),
        ('{"t": "x\\u0000"}', "cannot be stored"),
        ('{"\\ud800": 1}', "lone surrogate"),
        ('{"n": NaN}', "finite"),
    ],
    ids=["600-deep", "5000-deep", "10MB", "nul-escape", "surrogate-key", "nan"],
)
def test_form_create__hostile_payload__error_on_the_variant_row_nothing_written(
    admin_client, project, payload_text, words
):
    before = counts()
    answer = admin_client.post("/experiences/new", form_data(payload_text))
    assert answer.status_code == 200
    row = answer.context["variant_rows"][1]
    assert words in row["error"] and "“b”" in row["error"] and "variants[1].payload" in row["error"]
    assert counts() == before


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"variant-payload": ["{}", '{"t": "x\x00"}']}, "variant-payload"),
        ({"cond-attribute": ["country"], "cond-op": ["in"], "cond-values": ["DE\x00"]}, "cond-values"),
        ({"cond-attribute": ["coun\x00try"], "cond-op": ["in"], "cond-values": ["DE"]}, "cond-attribute"),
    ],
)
def test_form_create__raw_nul_in_payload_or_targeting__400_naming_the_field(admin_client, project, data, field):
    before = counts()
    answer = admin_client.post("/experiences/new", form_data("{}", **data))
    assert answer.status_code == 400 and answer.json()["error"]["field"] == field
    assert counts() == before


def test_form_create__targeting_values_too_large__error_on_targeting(admin_client, project):
    before = counts()
    data = form_data("{}", **{"cond-attribute": ["country"], "cond-op": ["in"], "cond-values": ["x" * 20_000]})
    answer = admin_client.post("/experiences/new", data)
    assert answer.status_code == 200 and "characters as JSON" in answer.context["errors"]["targeting"]
    assert counts() == before


# --- Decide's own body and profile attributes -----------------------------------------------------


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"attributes": nested(600)}, "context.attributes.a"),
        ({"attributes": {"bio": "x" * 10_000}}, "context"),
        ({"attributes": {"plan\x00": "gold"}}, "context.attributes (a key)"),
        ({"attributes": {"plan": "gold\ud800"}}, "body"),  # orjson refuses a lone surrogate escape
    ],
)
def test_decide__context_beyond_the_event_limits__400_naming_it(client, project, public_key, context, field):
    data = json.dumps({"anonymous_id": "v1", "context": context}).encode()
    answer = client.post(
        "/api/v1/decide", data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {public_key}"
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["field"].startswith(field)


@pytest.mark.parametrize(
    ("attributes", "field", "words"),
    [
        (nested(600), "properties.attributes.a", "too deep"),
        ({"bio": "x" * 9000}, "properties", "characters as JSON"),
        ({"pl\x00an": "gold"}, "properties.attributes (a key)", "cannot be stored"),
        ({"plan": "gold\x00"}, "properties.attributes.plan", "cannot be stored"),
    ],
)
def test_identify__attributes_beyond_the_limits__rejected_naming_them(
    client, project, public_key, attributes, field, words
):
    event = factories.event_make(0, type="identify", user_id="u1", properties={"attributes": attributes})
    data = json.dumps({"events": [event]})  # orjson itself cannot write 600 levels
    answer = client.post(
        "/api/v1/events", data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {public_key}"
    )
    assert answer.status_code == 400  # every event of the batch was rejected
    (rejected,) = answer.json()["rejected"]
    assert rejected["field"].startswith(field) and words in rejected["message"]


# --- One bad experience never stops the others ----------------------------------------------------


def plant(experience: Experience, **variant_fields) -> None:
    """Write straight to the database, past every check, as rows from before the checks were."""
    Variant.objects.filter(experience=experience, key="b").update(**variant_fields)


def test_bad_experience_in_database__left_out_reported_others_publish_and_change(
    admin_client, client, project, public_key, secret_key, django_capture_on_commit_callbacks
):
    bad = experience_make(project, "bad")
    good = experience_make(project, "good")
    spare = experience_make(project, "spare", start=False)
    plant(bad, payload=nested(600))

    services.snapshot_publish(project_id=project.pk)
    snapshot = published(project)
    assert set(snapshot["experiences"]) == {"good"}
    assert snapshot["left_out"]["bad"]["field"].startswith("variants[1].payload")
    assert set(decide(client, public_key)["assignments"]) == {"good"}

    # Pausing another experience publishes, and decide stops serving it.
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post("/experiences/good/pause").status_code == 302
    assert Experience.objects.get(pk=good.pk).status == ExperienceStatus.PAUSED
    assert set(published(project)["experiences"]) == set()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/experiences/spare/start")
    assert set(published(project)["experiences"]) == {"spare"}

    page = admin_client.get("/experiences/bad/").content.decode()
    assert 'id="compile-error"' in page and "Decide is not serving this experience" in page
    assert "variants[1].payload" in page and "nested too deep" in page and "Edit to fix" in page
    assert 'id="compile-error"' not in admin_client.get("/experiences/spare/").content.decode()
    listing = admin_client.get("/experiences/").content.decode()
    assert listing.count("compile-error-badge") == 1 and "not served: variants[1].payload" in listing
    out = client.get("/api/v1/experiences/bad/", HTTP_AUTHORIZATION=f"Bearer {secret_key}").json()
    assert out["compile_error"]["field"].startswith("variants[1].payload")
    assert spare.key in {
        e["key"] for e in client.get("/api/v1/experiences/", HTTP_AUTHORIZATION=f"Bearer {secret_key}").json()
    }

    # Fixed through the API, it is served again.
    with django_capture_on_commit_callbacks(execute=True):
        fixed = rest(
            client,
            "patch",
            "/api/v1/experiences/bad/",
            secret_key,
            b'{"variants": [{"key": "control", "is_control": true}, {"key": "b", "payload": {"ok": true}}]}',
        )
    assert fixed.status_code == 200 and fixed.json()["compile_error"] is None
    assert set(published(project)["experiences"]) == {"spare", "bad"} and "bad" not in published(project)["left_out"]


@pytest.mark.parametrize(
    ("planted", "field"),
    [
        ({"payload": {"n": 10**30}}, "variants[1].payload.n"),
        ({"is_control": True}, "variants.is_control"),
        ({"weight": float("nan")}, "variants.weight"),
        ({"payload": {"t": "x" * (EXPERIENCE_MAX_CHARS // 8)}}, "variants[1].payload"),
    ],
    ids=["integer-beyond-64-bits", "no-control", "nan-weight", "payload-too-large"],
)
def test_bad_experience_any_reason__left_out_named_rest_published(project, planted, field):
    bad = experience_make(project, "bad")
    experience_make(project, "good")
    if planted.get("is_control"):
        Variant.objects.filter(experience=bad).update(is_control=False)
    else:
        plant(bad, **planted)
    services.snapshot_publish(project_id=project.pk)
    snapshot = published(project)
    assert set(snapshot["experiences"]) == {"good"}
    assert snapshot["left_out"]["bad"]["field"].startswith(field)
    assert services.experience_compile_problem(experience=bad)["field"].startswith(field)


def test_draft_with_bad_payload__start_refused_naming_it(project, admin_client):
    draft = experience_make(project, "draft", start=False)
    plant(draft, payload=nested(600))
    with pytest.raises(services.ExperienceError) as err:
        services.experience_start(experience=draft)
    assert err.value.field.startswith("variants[1].payload")
    assert Experience.objects.get(pk=draft.pk).status == ExperienceStatus.DRAFT
    page = admin_client.get("/experiences/draft/").content.decode()
    assert "This experience cannot be started" in page


def test_worst_case_experience__compiles_publishes_and_decide_serves_it(client, project, public_key):
    """Fifteen variants, each payload at the depth limit and just under the size limit."""
    filler = "é" * (PAYLOAD_MAX_CHARS - 200)
    variants = [
        {"key": f"v{i}", "payload": nested(PAYLOAD_MAX_DEPTH - 1, {"body": filler}), "is_control": i == 0}
        for i in range(15)
    ]
    experience = services.experience_create(project=project, key="big", name="Big", touchpoint="t", variants=variants)
    services.experience_start(experience=experience)
    services.snapshot_publish(project_id=project.pk)
    snapshot = published(project)
    assert set(snapshot["experiences"]) == {"big"} and snapshot["left_out"] == {}
    size = redis_client.worker().strlen(rkeys.snapshot(project.pk))
    assert EXPERIENCE_MAX_CHARS < size < 4 * EXPERIENCE_MAX_CHARS  # UTF-8 é is 2 bytes: ~2 MB in Redis
    served = decide(client, public_key)["assignments"]["big"]
    assert served["payload"] == variants[int(served["variant"][1:])]["payload"]


# --- Through the real server, with curl and a file body ----------------------------------------------


def curl(url: str, key: str, method: str, path) -> tuple[int, dict]:
    headers = ["-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {key}"]
    out = subprocess.run(
        ["curl", "-sS", "-X", method, "--data-binary", f"@{path}", *headers, "-w", "\n%{http_code}", url],
        capture_output=True,
        check=True,
        timeout=120,
    )
    answer, _, status = out.stdout.rpartition(b"\n")
    return int(status), orjson.loads(answer)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the server process sees what the test writes
def test_real_server__curl_file_bodies__400_naming_the_payload_413_past_the_body_limit(web_server, tmp_path):
    project = factories.project_make(name="Curl")
    key = factories.key_make(project=project, kind="secret")
    experience_make(project, "hero")
    before = counts()
    files = {
        "deep": body(nested_text(600)),
        "big": body(json.dumps({"html": TEN_MB})),
        "patch": b'{"variants": [{"key": "a", "is_control": true}, {"key": "b", "payload": '
        + nested_text(600).encode()
        + b"}]}",
        "huge": body(json.dumps({"html": "x" * (20 * 1024 * 1024)})),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    url = f"{web_server}/api/v1/experiences/"

    status, answer = curl(url, key, "POST", tmp_path / "deep")
    assert status == 400 and answer["error"]["field"].startswith("variants[1].payload.a")
    assert "nested too deep" in answer["error"]["message"]
    status, answer = curl(url, key, "POST", tmp_path / "big")
    assert status == 400 and answer["error"]["field"] == "variants[1].payload"
    assert "10,485,7" in answer["error"]["message"] and "65,536" in answer["error"]["message"]
    status, answer = curl(f"{url}hero/", key, "PATCH", tmp_path / "patch")
    assert status == 400 and answer["error"]["field"].startswith("variants[1].payload")
    status, answer = curl(url, key, "POST", tmp_path / "huge")
    assert status == 413 and answer["error"]["field"] == "body" and "64 KB" in answer["error"]["message"]
    assert counts() == before
