"""Hostile input on the newest public endpoints, through the real decide server (granian) with curl
and a file body, as an integrator's script would send it: batch decide, its CSV export, OFREP single
and bulk, decide's `explain`, the SDK snapshot and its event stream. Every case gets a 4xx whose
message names the field and the fix (or a 2xx where the input is legitimately fine), never a 5xx,
and the refused calls write nothing: the project's exposures and unit keys are counted before and
after, past one accepted call whose own exposure is awaited (the server writes behind, in order)."""

import subprocess
import time

import orjson
import pytest

from personalization import redis_client, rkeys
from personalization.decide import batch, batch_csv
from tests.factories import flag_experiences_start, key_make, project_make, stream_exposures

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]  # the server sees what tests write

DEADLINE_SECONDS = 10
DEEP = 40  # levels of nesting: past any limit on context, well within what a JSON parser takes


def _nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels):
        value = {"x": value}
    return value


@pytest.fixture
def hostile(decide_server, tmp_path):
    """A project with running experiences, its keys, and `send`: curl with the body in a file."""
    project = project_make(name="Hostile")
    flag_experiences_start(project=project)
    keys = {"public": key_make(project=project, kind="public"), "secret": key_make(project=project, kind="secret")}
    files = iter(range(10_000))

    def send(method: str, path: str, body: bytes | None = None, *, key="public", headers=()) -> tuple[int, bytes]:
        command = ["curl", "-sS", "-g", "-o", "-", "-w", "\n%{http_code}", "-X", method, f"{decide_server}{path}"]
        command += ["-H", f"Authorization: Bearer {keys[key]}", "--max-time", "20"]
        for header in headers:
            command += ["-H", header]
        if body is not None:
            name = tmp_path / f"body-{next(files)}"
            name.write_bytes(body)
            command += ["--data-binary", f"@{name}"]
        out = subprocess.run(command, capture_output=True, check=True).stdout
        raw, _, status = out.rpartition(b"\n")
        return int(status), raw

    return project, send


def _written(project_id: int) -> tuple[int, int]:
    """The project's exposures waiting in the events stream and its unit hashes in Redis."""
    units = sum(1 for _ in redis_client.worker().scan_iter(match=rkeys.unit(project_id, "*"), count=1000))
    return len(stream_exposures(project_id)), units


def _nothing_written_but_the_sentinel(project, send, before: tuple[int, int]) -> None:
    """One accepted decide, then its exposures awaited: whatever the refused calls might have queued
    behind would be in the stream by then. Only the sentinel's exposures and unit hash are new."""
    status, raw = send("POST", "/api/v1/decide", orjson.dumps({"user_id": "sentinel", "experiences": ["beta"]}))
    assert status == 200, raw
    exposed = len(orjson.loads(raw)["assignments"])
    deadline = time.monotonic() + DEADLINE_SECONDS
    while _written(project.pk)[0] < before[0] + exposed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _written(project.pk) == (before[0] + exposed, before[1] + 1)


def _refused(status: int, raw: bytes, field: str, case: str) -> None:
    """A 4xx naming `field`, with a message that says what to send instead."""
    assert 400 <= status < 500, (case, status, raw[:300])
    error = orjson.loads(raw)["error"]
    assert error["field"] == field, (case, error)
    assert len(error["message"]) > 10, (case, error)


def test_batch__hostile_bodies__4xx_naming_the_field_and_nothing_written(hostile):
    project, send = hostile
    before = _written(project.pk)
    units = [f"u{n}" for n in range(batch.MAX_UNITS + 1)]
    json_cases = [
        ("10,001 units", {"units": units}, "units"),
        ("units as text", {"units": "a,b,c"}, "units"),
        ("a number as a unit", {"units": ["a", 17]}, "units[1]"),
        ("a number as user_id", {"units": [{"user_id": 5}]}, "units[0].user_id"),
        ("a list as anonymous_id", {"units": [{"anonymous_id": ["x"]}]}, "units[0].anonymous_id"),
        ("true as user_id", {"units": [{"user_id": True}]}, "units[0].user_id"),
        ("NUL in an id", {"units": ["ok", "b\x00d"]}, "units[1]"),
        ("nested shared attributes", {"units": ["a"], "context": {"attributes": _nested(DEEP)}}, "context"),
        (
            "oversized shared attributes",
            {"units": ["a"], "context": {"attributes": {"bio": "x" * 300_000}}},
            "context",
        ),
        (
            "nested attributes of one unit",
            {"units": ["a", {"user_id": "b", "context": {"attributes": _nested(DEEP)}}]},
            "units[1].context",
        ),
        ("explain as text", {"units": ["a"], "explain": "yes"}, "explain"),
    ]
    for case, body, field in json_cases:
        status, raw = send(
            "POST", "/api/v1/decide/batch", orjson.dumps(body), headers=["Content-Type: application/json"]
        )
        assert 400 <= status < 500, (case, status, raw[:300])
        error = orjson.loads(raw)["error"]
        assert error["field"].startswith(field), (case, error)
        assert len(error["message"]) > 10, (case, error)
    raw_cases = [
        ("empty body", b"", "application/json"),
        ("a lone surrogate escaped", b'{"units": ["\\ud800"]}', "application/json"),
        ("bytes that are not UTF-8", b'{"units": ["\xff\xfe"]}', "application/json"),
        ("a form, not JSON", b"units=a&units=b", "application/x-www-form-urlencoded"),
        ("a JSON array", b'["a", "b"]', "application/json"),
    ]
    for case, body, content_type in raw_cases:
        status, raw = send("POST", "/api/v1/decide/batch", body, headers=[f"Content-Type: {content_type}"])
        _refused(status, raw, "body", case)
        assert b"units" in raw, (case, raw)  # the message shows the shape to send
    _nothing_written_but_the_sentinel(project, send, before)
    # JSON sent as text/plain is legitimately fine (the endpoints read JSON whatever the type).
    status, raw = send("POST", "/api/v1/decide/batch", b'{"units": ["plain"]}', headers=["Content-Type: text/plain"])
    assert status == 200 and orjson.loads(raw)["user_id"] == "plain"


def test_export__hostile_csv__4xx_naming_the_line_and_nothing_written(hostile):
    project, send = hostile
    before = _written(project.pk)
    csv = ["Content-Type: text/csv"]
    cases = [
        ("a NUL in an id", b"user_id\nok-1\nbad\x00id\n", "line 3"),
        ("a huge line", b"user_id\nok-1\n" + b"x" * 1_000_000 + b"\n", "line 3"),
        ("10,001 ids", b"user_id\n" + b"\n".join(b"id-%d" % n for n in range(batch.MAX_UNITS + 1)), "ids"),
        ("only a header", b"user_id\n", "ids"),
        ("bytes that are not UTF-8", b"user_id\nok\n\xff\xfe\n", "body"),
    ]
    for case, body, field in cases:
        status, raw = send("POST", "/api/v1/decide/export?experiences=hero", body, headers=csv)
        _refused(status, raw, field, case)
    status, raw = send(
        "POST", "/api/v1/decide/export?experiences=" + ",".join(["k"] * 300), b"user_id\nok\n", headers=csv
    )
    _refused(status, raw, "experiences", "300 experience keys")
    # A CSV sent as JSON: refused naming the body, and the message says to send text/csv.
    status, raw = send("POST", "/api/v1/decide/export", b"user_id\nok-1\n", headers=["Content-Type: text/plain"])
    _refused(status, raw, "body", "CSV without its content type")
    assert b"text/csv" in raw
    _nothing_written_but_the_sentinel(project, send, before)
    # Blank lines and extra columns are legitimately fine: skipped and ignored.
    status, raw = send("POST", "/api/v1/decide/export?experiences=hero", b"user_id\n\nfine,extra\n", headers=csv)
    assert status == 200, raw[:300]
    rows = raw.decode().splitlines()
    assert rows[0].split(",") == batch_csv.EXPORT_HEADER and [r.split(",")[1:3] for r in rows[1:]] == [["fine", "hero"]]


def test_ofrep__hostile_keys_contexts_and_etags__4xx_with_a_code_never_5xx(hostile):
    project, send = hostile
    before = _written(project.pk)
    flags = "/ofrep/v1/evaluate/flags"
    target = {"targetingKey": "o-1", "plan": "gold"}
    cases = [
        ("a 10,000-character key", f"{flags}/{'k' * 10_000}", {"context": target}, {404, 400}),
        ("NUL in the key", f"{flags}/he%00ro", {"context": target}, {404, 400}),
        ("not UTF-8 in the key", f"{flags}/he%ffro", {"context": target}, {404, 400}),
        ("context too deep", f"{flags}/hero", {"context": {**target, "deep": _nested(DEEP)}}, {400}),
        ("bulk, context too deep", flags, {"context": {**target, "deep": _nested(DEEP)}}, {400}),
        ("context too big", f"{flags}/hero", {"context": {**target, "bio": "x" * 2_000_000}}, {413, 400}),
        ("a number as targetingKey", f"{flags}/hero", {"context": {"targetingKey": 5}}, {400}),
        ("a JSON array", flags, [1, 2], {400}),
    ]
    for case, path, body, statuses in cases:
        status, raw = send("POST", path, orjson.dumps(body), headers=["Content-Type: application/json"])
        assert status in statuses, (case, status, raw[:300])
        answer = orjson.loads(raw)
        assert answer["errorCode"] and len(answer["errorDetails"]) > 10, (case, answer)
    _nothing_written_but_the_sentinel(project, send, before)
    nesting = b'{"context": {"targetingKey": "o", "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}}"
    status, raw = send("POST", f"{flags}/hero", nesting, headers=["Content-Type: application/json"])
    assert status == 400 and orjson.loads(raw)["errorCode"] == "PARSE_ERROR", raw[:300]
    # Garbage in If-None-Match is no match: the bulk answer comes whole (it is legitimately fine).
    # A control character is no HTTP at all: the server refuses the request before Kairos sees it.
    status, raw = send("POST", flags, orjson.dumps({"context": target}), headers=["If-None-Match: \x7f\x01garbage"])
    assert status == 400, (status, raw[:300])
    for garbage in ('W/"', "garbage", '"' * 4_000, "*, , ,", 'W/"1", "2', "\u00e9\u00e8"):
        status, raw = send("POST", flags, orjson.dumps({"context": target}), headers=[f"If-None-Match: {garbage}"])
        assert status in (200, 304), (garbage[:20], status, raw[:300])
        if status == 200:
            assert {f["key"] for f in orjson.loads(raw)["flags"]} >= {"hero", "color", "beta"}


def test_decide_explain_and_sdk_params__4xx_naming_the_field(hostile):
    project, send = hostile
    before = _written(project.pk)
    for value in ("yes", 1, None, [], {"on": True}):
        status, raw = send("POST", "/api/v1/decide", orjson.dumps({"user_id": "e-1", "explain": value}))
        _refused(status, raw, "explain", repr(value))
        assert b"true or false" in raw
    for seconds in ("-1", "0", "1e309", "nan", "inf", "text", "56", "%00"):
        status, raw = send("GET", f"/api/v1/sdk/snapshot/events?seconds={seconds}", key="secret")
        _refused(status, raw, "seconds", seconds)
        assert b"1 to 55" in raw
    status, raw = send("GET", "/api/v1/sdk/snapshot", key="secret", headers=['If-None-Match: W/"garbage, "'])
    assert status == 200 and orjson.loads(raw)["version"], raw[:300]
    status, raw = send("GET", "/api/v1/sdk/snapshot/events?seconds=1", key="secret")
    assert status == 200 and b"event: version" in raw and b"event: bye" in raw, raw[:300]
    _nothing_written_but_the_sentinel(project, send, before)
