"""`POST /api/v1/events/import` through the real server (granian, as `make run` starts it), sent the
way people send files: curl with a file body, chunked or with a length, with curl's default form
Content-Type, with none, or with the right one. Every answer's counts are checked against the rows
the drain stored in PostgreSQL."""

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from personalization import services
from personalization.ingest.history import MAX_LINE_BYTES
from personalization.models import Event
from tests import factories

OLD = (datetime.now(UTC) - timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%SZ")
CONTENT_TYPES = {
    "jsonl": {"curl's default (form)": None, "none": "", "its own": "application/x-ndjson"},
    "csv": {"curl's default (form)": None, "none": "", "its own": "text/csv"},
}


def _drain() -> None:
    while services.events_drain(claim_idle_ms=0):
        pass


def _write(path: Path, lines: list[bytes]) -> Path:
    """Lines joined as people's files are: some end in CRLF, the last one has no line ending."""
    with path.open("wb") as file:
        for number, line in enumerate(lines, start=1):
            ending = b"" if number == len(lines) else (b"\r\n" if number % 7 == 0 else b"\n")
            file.write(line + ending)
    return path


def _jsonl(path: Path, n: int) -> Path:
    """n small events (ten years old: history), one a line."""
    return _write(
        path,
        [
            orjson.dumps({"event_id": f"e{i}", "type": "visit", "anonymous_id": f"a{i % 700}", "timestamp": OLD})
            for i in range(n)
        ],
    )


def _csv(path: Path, n: int) -> Path:
    rows = [f"e{i},visit,a{i % 700},{OLD}".encode() for i in range(n)]
    return _write(path, [b"event_id,type,anonymous_id,timestamp", *rows])


def _curl(url: str, key: str, path: Path, fmt: str, chunked: bool, content_type: str | None) -> list[dict]:
    command = ["curl", "-sS", "--fail-with-body", f"{url}/api/v1/events/import?format={fmt}"]
    command += ["-H", f"Authorization: Bearer {key}", "--data-binary", f"@{path}"]
    if chunked:
        command += ["-H", "Transfer-Encoding: chunked"]
    if content_type is not None:
        command += ["-H", f"Content-Type:{' ' + content_type if content_type else ''}"]  # "Content-Type:" drops it
    answer = subprocess.run(command, capture_output=True, check=True, timeout=600).stdout
    return [orjson.loads(line) for line in answer.splitlines()]


def _cases(n: int) -> list[tuple[str, bool, str]]:
    """Every format × chunked or not × Content-Type for small files; for the large one (about 13 s a
    case with its drain), JSONL chunked and CSV with a length, both without their own Content-Type."""
    every = [(f, chunked, label) for f in ("jsonl", "csv") for chunked in (False, True) for label in CONTENT_TYPES[f]]
    if n < 10_000:
        return every
    return [("jsonl", True, "curl's default (form)"), ("csv", False, "none")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("n", [3, 1_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_import_over_http__every_line_stored__answer_equals_database(web_server, tmp_path, n):
    files = {"jsonl": _jsonl(tmp_path / "history.jsonl", n), "csv": _csv(tmp_path / "history.csv", n)}
    for number, (fmt, chunked, label) in enumerate(_cases(n)):
        project = factories.project_make(name=f"Import {number}")
        key = factories.key_make(project=project, kind="secret")
        case = f"{fmt}, {'chunked' if chunked else 'Content-Length'}, Content-Type {label}"
        answer = _curl(web_server, key, files[fmt], fmt, chunked, CONTENT_TYPES[fmt][label])
        final = answer[-1]
        assert final["done"] and "error" not in final, (case, final)
        assert final["rejected_count"] == 0 and final["accepted"] == n, (case, final["rejected"][:2])
        assert final["lines"] == n + (fmt == "csv"), case  # a CSV's header is its line 1
        progress = [line["accepted"] for line in answer[:-1] if not line["done"]]
        assert len(progress) >= n // 1000 and progress == sorted(progress), case  # a line per batch of 1,000
        _drain()
        assert Event.objects.filter(project=project).count() == final["accepted"], case


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_import_over_http__blank_bad_and_overlong_lines__rejected_by_number_others_stored(
    web_server, tmp_path, project, secret_key, fmt
):
    def good(i: int) -> bytes:
        if fmt == "csv":
            return f"g{i},visit,a{i},{OLD}".encode()
        return orjson.dumps({"event_id": f"g{i}", "type": "visit", "anonymous_id": f"a{i}", "timestamp": OLD})

    overlong = (
        b"long,visit,a," + OLD.encode() + b"," + b"x" * MAX_LINE_BYTES
        if fmt == "csv"
        else orjson.dumps(
            {"event_id": "long", "type": "visit", "anonymous_id": "a", "properties": {"x": "x" * MAX_LINE_BYTES}}
        )
    )
    bad = f"bad,nonsense type!,a,{OLD}".encode() if fmt == "csv" else b'{"event_id": "bad", '
    lines = [good(1), b"", overlong, good(2), b"   ", bad, good(3), b"", good(4)]
    if fmt == "csv":
        lines.insert(0, b"event_id,type,anonymous_id,timestamp")
    path = _write(tmp_path / f"history.{fmt}", lines)
    final = _curl(web_server, secret_key, path, fmt, chunked=True, content_type=None)[-1]
    offset = fmt == "csv"  # the header is line 1
    assert final["accepted"] == 4 and final["rejected_count"] == 2, final
    rejected = {item["line"]: item for item in final["rejected"]}
    assert set(rejected) == {3 + offset, 6 + offset}
    assert f"over the {MAX_LINE_BYTES:,}" in rejected[3 + offset]["message"]
    _drain()
    stored = set(Event.objects.filter(project=project).values_list("event_id", flat=True))
    assert stored == {"g1", "g2", "g3", "g4"}
