"""Batch decide (`POST /api/v1/decide/batch`), its CSV export (`POST /api/v1/decide/export` and
`manage.py decide_export`): one answer per unit equal to single decide's, exposures written per
chunk, limits answered 4xx naming the field with nothing written."""

import csv
import io
import subprocess
import time

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from personalization import redis_client, rkeys, services
from personalization.decide import batch, batch_csv
from personalization.decide import runtime as decide_runtime
from personalization.models import Exposure
from tests.factories import flag_experiences_start, key_make, project_make, stream_exposures

SPLITS = {"fixed_split", "bandit", "segment_bandit"}


def _batch(client, key: str, body, path="/api/v1/decide/batch"):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, data=data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def _lines(response) -> list[dict]:
    return [orjson.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def _same_answer(batched: dict, single: dict) -> None:
    """Single decide after the batch gives the batch's variants; a split assignment is now sticky."""
    assert batched["assignments"].keys() == single["assignments"].keys()
    for key, was in batched["assignments"].items():
        now = single["assignments"][key]
        assert (now["variant"], now["payload"], now["version"]) == (was["variant"], was["payload"], was["version"])
        assert now["reason"] == ("sticky" if was["reason"] in SPLITS else was["reason"])


@pytest.mark.django_db
def test_batch__1001_units__a_line_each_as_single_decide__one_stream_entry_per_chunk(client, project, public_key):
    flag_experiences_start(project=project)
    units = [f"b-{n}" if n % 2 else {"user_id": f"b-{n}", "context": {"plan": "gold"}} for n in range(1001)]
    response = _batch(client, public_key, {"units": units, "context": {"device": "mobile"}})
    assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    answers = _lines(response)
    assert [a["user_id"] for a in answers] == [f"b-{n}" for n in range(1001)]
    reasons = {a["reason"] for answer in answers for a in answer["assignments"].values()}
    assert {"fixed_split", "holdout_global", "holdout_experience", "targeting_miss"} <= reasons
    # Three chunks (500, 500, 1): three stream entries holding every exposure, not one per unit.
    assert redis_client.worker().xlen(rkeys.EVENTS_STREAM) == 3
    # Every unit is exposed in hero, color and beta; in gold only where targeted (plan gold, even n),
    # held out or not: a held-out unit outside the targeting is no part of the experiment.
    expected = 3 * 1001 + 501
    assert len(stream_exposures(project.pk)) == expected

    for n in range(0, 1001, 20):
        body = {"user_id": f"b-{n}", "context": {"device": "mobile", **({} if n % 2 else {"plan": "gold"})}}
        single = client.post(
            "/api/v1/decide",
            orjson.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {public_key}",
        ).json()
        _same_answer(answers[n], single)
    decide_runtime.buffer.flush()
    assert len(stream_exposures(project.pk)) == expected  # the batch's sticky marks: nothing exposed twice
    while services.events_drain(claim_idle_ms=0):
        pass
    assert Exposure.objects.filter(project=project).count() == expected


@pytest.mark.django_db
def test_batch__limits__4xx_naming_the_field_and_nothing_written(client, project, public_key):
    flag_experiences_start(project=project)
    cases = [
        ({"units": []}, 400, "units"),
        ({"units": [f"u{n}" for n in range(batch.MAX_UNITS + 1)]}, 400, "units"),
        ({"units": ["a", "b", "c", 17]}, 400, "units[3]"),
        ({"units": ["a", {"user_id": "x" * 129}]}, 400, "units[1].user_id"),
        ({"units": ["a", {"anonymous_id": "b\x00"}]}, 400, "units[1].anonymous_id"),
        ({"units": ["a", {"context": {}}]}, 400, "units[1].user_id"),
        ({"units": ["a", "b", "a"]}, 400, "units[2]"),
        ({"units": ["a", {"user_id": "b", "context": "mobile"}]}, 400, "units[1].context"),
        ({"units": ["a"], "experiences": "hero"}, 400, "experiences"),
        ({"units": ["a"], "context": {"attributes": 3}}, 400, "context.attributes"),
        (b'{"units": ["a", ' + b'"b' * (batch.MAX_BODY_BYTES // 2) + b"]}", 413, "body"),
    ]
    for body, status, field in cases:
        response = _batch(client, public_key, body)
        assert (response.status_code, response.json()["error"]["field"]) == (status, field), field
    at_limit = _batch(client, public_key, {"units": [f"u{n}" for n in range(batch.MAX_UNITS)], "experiences": []})
    assert len(_lines(at_limit)) == batch.MAX_UNITS
    assert stream_exposures(project.pk) == []  # refused calls wrote nothing, the last asked for no experience


@pytest.mark.django_db
def test_batch__redis_away__fallback_answers_and_exposures_kept_for_later(client, project, public_key):
    flag_experiences_start(project=project)
    _lines(_batch(client, public_key, {"units": ["warm"]}))  # the process loads the snapshot
    decide_runtime.redis_down_note(time.monotonic())
    answers = _lines(_batch(client, public_key, {"units": [f"f-{n}" for n in range(20)]}))
    # No plan given: gold misses its targeting, unless the global holdout (checked first) takes the unit.
    assert "targeting_miss" in {a["assignments"]["gold"]["reason"] for a in answers} <= {"targeting_miss", "fallback"}
    assert {a["assignments"][k]["reason"] for a in answers for k in ("hero", "color", "beta")} == {"fallback"}
    decide_runtime._redis_down_until = 0.0
    decide_runtime.buffer.flush()
    fallen = [e for e in stream_exposures(project.pk) if e["user_id"].startswith("f-")]
    assert len(fallen) == 20 * 3 and all(e["properties"]["segs"] is None for e in fallen)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the server process sees what the test writes
def test_real_server__curl_file_bodies__batch_ndjson_and_csv_export_equal_the_command(decide_server, tmp_path):
    project = project_make(name="Send time")
    flag_experiences_start(project=project)
    key = key_make(project=project, kind="public")
    ids = [f"mail-{n}" for n in range(600)]
    body = tmp_path / "batch.json"
    body.write_bytes(orjson.dumps({"units": ids, "experiences": ["hero", "color"]}))
    ids_file = tmp_path / "ids.csv"
    ids_file.write_text("user_id\n" + "\n".join(ids) + "\n")

    def curl(path: str, data, content_type: str) -> str:
        command = ["curl", "-sS", "--fail-with-body", "-H", f"Authorization: Bearer {key}", "-H"]
        command += [f"Content-Type: {content_type}", "--data-binary", f"@{data}", f"{decide_server}{path}"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    answers = [orjson.loads(line) for line in curl("/api/v1/decide/batch", body, "application/json").splitlines()]
    assert [a["user_id"] for a in answers] == ids
    variants = {(a["user_id"], k): v["variant"] for a in answers for k, v in a["assignments"].items()}
    assert len(variants) == 1200

    exported = list(csv.reader(io.StringIO(curl("/api/v1/decide/export?experiences=hero,color", ids_file, "text/csv"))))
    assert exported[0] == batch_csv.EXPORT_HEADER and len(exported) == 1 + 1200
    assert {(row[1], row[2]): row[3] for row in exported[1:]} == variants

    out = tmp_path / "out.csv"
    call_command(
        "decide_export",
        "--project",
        project.slug,
        "--ids",
        str(ids_file),
        "--out",
        str(out),
        "--experiences",
        "hero,color",
    )
    from_command = list(csv.reader(out.open()))
    assert from_command[0] == batch_csv.EXPORT_HEADER
    assert {(row[1], row[2]): row[3] for row in from_command[1:]} == variants
    assert {row[4] for row in from_command[1:]} <= {"sticky", "holdout_global", "holdout_experience"}


def test_ids_parse__header_names_the_kind__blank_lines_skipped():
    assert batch_csv.ids_parse("anonymous_id\nb1\n\nb2,extra\n") == [{"anonymous_id": "b1"}, {"anonymous_id": "b2"}]
    assert batch_csv.ids_parse("u1\r\nu2\r\n") == [{"user_id": "u1"}, {"user_id": "u2"}]
    with pytest.raises(batch_csv.IdsError):
        batch_csv.ids_parse("user_id\n\n")


def test_ids_read__the_line_of_each_id__a_refused_unit_and_an_unreadable_line_named_by_line():
    units, lines = batch_csv.ids_read("user_id\nu1\n\nu2,extra\n")
    assert units == [{"user_id": "u1"}, {"user_id": "u2"}] and lines == [2, 4]
    assert batch_csv.field_on_line("units[1].user_id", lines) == "line 4"
    assert batch_csv.field_on_line("units", lines) == "ids"
    assert batch_csv.field_on_line("experiences", lines) == "experiences"
    with pytest.raises(batch_csv.IdsError) as caught:  # past the csv module's cell limit: csv.Error, was a 500
        batch_csv.ids_read("u1\n" + "x" * 200_000 + "\nu3\n")
    assert caught.value.field == "line 2" and "128 characters" in caught.value.message


@pytest.mark.django_db
def test_decide_export_command__a_refused_id__named_by_its_line_nothing_written(project, tmp_path):
    flag_experiences_start(project=project)
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\nok-1\n\nbad\x00id\n")
    with pytest.raises(CommandError, match="line 4: contains a character"):
        call_command("decide_export", "--project", project.slug, "--ids", str(ids), "--out", str(tmp_path / "o.csv"))
    assert stream_exposures(project.pk) == []
