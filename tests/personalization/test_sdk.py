"""The Python server SDK (sdk/python, imported from the repository) against the real decide server:
the snapshot endpoint's keys and ETag, local answers equal to decide's, an edit reaching the SDK over
server-sent events, defaults without a snapshot, exposures in the events stream, and the wheel."""

import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import requests

from personalization import redis_client, rkeys, services
from personalization.models import BanditWeights
from tests.factories import flag_experiences_start, key_make, project_make, stream_exposures

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "sdk" / "python"))
from kairos_sdk import KairosClient  # noqa: E402
from kairos_sdk._engine_files import ENGINE_FILES  # noqa: E402

DEADLINE_SECONDS = 10


@pytest.fixture
def sdk_project(transactional_db):
    """flag_experiences_start's four experiences (a holdout, splits, attribute targeting) and a bandit
    whose weights (10 / 90) come from its latest update."""
    project = project_make(name="Sdk")
    flag_experiences_start(project=project)
    variants = [{"key": "bandit-0", "is_control": True}, {"key": "bandit-1"}]
    bandit = services.experience_create(
        project=project, key="bandit", name="Bandit", touchpoint="bandit", variants=variants, policy="bandit"
    )
    BanditWeights.objects.create(
        experience=bandit, computed_at=datetime.now(UTC), weights={"bandit-0": 0.1, "bandit-1": 0.9}, stats={}
    )
    services.experience_start(experience=bandit)
    return project, key_make(project=project, kind="secret"), key_make(project=project, kind="public")


def _get(url: str, key: str, **headers) -> requests.Response:
    return requests.get(url, headers={"Authorization": f"Bearer {key}", **headers}, timeout=10)


def test_snapshot__secret_key__served_with_etag_and_304(decide_server, sdk_project):
    project, secret, public = sdk_project
    url = f"{decide_server}/api/v1/sdk/snapshot"
    refused = _get(url, public)
    assert refused.status_code == 403 and "public key" in refused.json()["error"]["message"]
    assert _get(url, "ks_unknown").status_code == 401
    served = _get(url, secret)
    assert served.status_code == 200
    snapshot = served.json()
    assert set(snapshot["experiences"]) == {"hero", "color", "beta", "gold", "bandit"}
    assert snapshot["experiences"]["bandit"]["weights"] == {"": [0.1, 0.9]}  # the weights travel with it
    assert served.headers["ETag"] == f'"{snapshot["version"]}"'
    assert _get(url, secret, **{"If-None-Match": served.headers["ETag"]}).status_code == 304
    services.snapshot_publish(project_id=project.pk)
    assert _get(url, secret, **{"If-None-Match": served.headers["ETag"]}).status_code == 200
    stream = _get(f"{decide_server}/api/v1/sdk/snapshot/events?seconds=0", secret)
    assert stream.status_code == 400 and stream.json()["error"]["field"] == "seconds"


def test_local_decide__same_variants_and_reasons_as_the_decide_server(decide_server, sdk_project):
    project, secret, public = sdk_project
    fast = redis_client.worker()
    for n in range(0, 40, 3):  # some units' plan is in their Redis hash, not in the request
        fast.hset(rkeys.unit(project.pk, f"u{n}"), "attr:plan", "gold")
    client = KairosClient(decide_server, secret, stream=False, start=False)
    assert client.refresh()
    reasons, variants = set(), set()
    for n in range(40):
        unit, attributes = f"u{n}", {"plan": "gold"} if n % 2 else {}
        state = {k.decode(): v.decode() for k, v in fast.hgetall(rkeys.unit(project.pk, unit)).items()}
        local = client.decide(unit, attributes=attributes, unit_state=state)
        body = {"user_id": unit, "context": {"attributes": attributes}}
        served = requests.post(
            f"{decide_server}/api/v1/decide",
            data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {public}"},
            timeout=10,
        ).json()
        assert local["version"] == served["version"]
        for key, answer in served["assignments"].items():
            mine = local["assignments"][key]
            assert (mine["variant"], mine["reason"], mine["payload"]) == (
                answer["variant"],
                answer["reason"],
                answer["payload"],
            ), (unit, key)
            reasons.add(answer["reason"])
            variants.add(answer["variant"])
    # The cases covered: holdouts, splits, targeting both ways, the bandit's weights.
    assert {"holdout_global", "holdout_experience", "fixed_split", "targeting_miss", "bandit"} <= reasons
    assert {"gold-1", "bandit-0", "bandit-1"} <= variants


def test_experience_edit__reaches_the_sdk_over_server_sent_events(decide_server, sdk_project):
    project, secret, _ = sdk_project
    with KairosClient(decide_server, secret, poll_seconds=600, stream_seconds=2) as client:
        before = client.version
        hero = project.experiences.get(key="hero")
        variants = [
            {"key": "hero-0", "payload": {"headline": "Hello"}, "is_control": True},
            {"key": "hero-1", "payload": {"headline": "Edited"}},
        ]
        services.experience_update(experience=hero, variants=variants)
        published = int(redis_client.worker().get(rkeys.snapshot_version(project.pk)))
        assert published > before
        # Polling is every 600 s here: only the stream can bring it within the deadline.
        assert client.wait_for_version(published, DEADLINE_SECONDS)
        assert client.snapshot["experiences"]["hero"]["payloads"]["hero-1"] == {"headline": "Edited"}


def test_no_snapshot__defaults(decide_server, transactional_db):
    project = project_make(name="Empty")
    secret = key_make(project=project, kind="secret")
    assert _get(f"{decide_server}/api/v1/sdk/snapshot", secret).status_code == 404
    for base in (decide_server, "http://127.0.0.1:9"):  # nothing published; nothing listening
        client = KairosClient(base, secret, stream=False, start=False)
        assert not client.refresh()
        answer = client.decide("u1", experiences=["hero"])
        defaults = {"variant": None, "payload": None, "reason": "fallback", "version": None}
        assert answer["assignments"]["hero"] == defaults


def test_exposures__sent_in_batches__arrive_in_the_events_stream(decide_server, sdk_project):
    project, secret, public = sdk_project
    client = KairosClient(decide_server, secret, public_key=public, stream=False, poll_seconds=600)
    expected = set()
    for n in range(30):
        answer = client.decide(f"x{n}", kind="anonymous_id")
        client.decide(f"x{n}", kind="anonymous_id")  # the second time is not exposed again
        for key, assignment in answer["assignments"].items():
            held = assignment["reason"].startswith("holdout")
            if key != "gold":  # targeted at plan = gold, which these units lack: no exposure, held out or not
                expected.add((f"x{n}", key, None if held else assignment["variant"]))
    client.close()
    assert client.dropped == 0 and client.sent == len(expected)
    found = {
        (e["anonymous_id"], e["properties"]["experience"], e["properties"].get("variant"))
        for e in stream_exposures(project.pk)
    }
    assert found == expected


@pytest.mark.slow
def test_wheel__builds_with_the_repository_engine_byte_for_byte(tmp_path):
    # Built with the virtualenv's setuptools and wheel (in the lock), not in an isolated environment: that
    # one downloads setuptools from the package index on every run (28-44 s here, mostly waiting on the
    # network), and builds the same files.
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPOSITORY / "sdk/python")]
    subprocess.run([sys.executable, "-m", "pip", *build], check=True)
    (wheel,) = tmp_path.glob("kairos_sdk-*.whl")
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    for name in ENGINE_FILES:
        assert (installed / "kairos_sdk/_vendor" / name).read_bytes() == (REPOSITORY / name).read_bytes(), name
    # Outside the repository the SDK runs the vendored files, and they need nothing else of Kairos.
    code = "import kairos_sdk, personalization.decide.engine as e; print(e.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(installed)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(installed / "kairos_sdk/_vendor/personalization/decide/engine.py")
