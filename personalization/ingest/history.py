"""History import: events of any age from a JSONL or CSV stream, with a secret key.

Read line by line and sent on in batches through the same validation and stream as live events
(`events_ingest` without the age limit), so memory stays flat whatever the file size, a re-run is
harmless (events are stored once per event_id) and the report of an imported experiment is the
report of the same events sent live. When the drain falls behind, the import waits for it instead
of filling Redis.
"""

import csv
import hashlib
import io
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson
from django.conf import settings

from personalization import redis_client, rkeys
from personalization.ingest.schema import MAX_BATCH, BatchError
from personalization.ingest.stream import events_ingest
from personalization.throttle import Throttled

CSV_COLUMNS = ("event_id", "type", "user_id", "anonymous_id", "session_id", "timestamp", "value", "properties")
_MAX_REPORTED = 100  # rejected lines listed in the answer; the rest are counted
# The longest line taken as one event: an event at every field's limit (properties 8,000 characters, up to
# 4 bytes each in UTF-8, ids of 128) fits well under it. A longer line is rejected by number and skipped
# without being kept in memory, so one runaway line cannot exhaust the worker.
MAX_LINE_BYTES = 64_000
READ_BYTES = 64 * 1024  # read size from a file or a request body
_BOM = b"\xef\xbb\xbf"  # spreadsheet exports often start with one; it is not part of the first column's name


@dataclass
class ImportProgress:
    lines: int = 0
    bytes_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    dropped_noise: int = 0
    rejected_count: int = 0
    rejected: list[dict] = field(default_factory=list)  # {"line", "field", "message"}, the first _MAX_REPORTED
    warnings_count: int = 0
    warnings: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "lines": self.lines,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "dropped_noise": self.dropped_noise,
            "rejected_count": self.rejected_count,
            "rejected": self.rejected,
            "warnings_count": self.warnings_count,
            "warnings": self.warnings,
        }


class ImportFormatError(ValueError):
    """The file cannot be read as the format named; says how to fix it."""


# CSV columns by role, compared lower-case without "_", "-" or spaces: public datasets and exports name
# them their own way (REES46: event_time, event_type, user_session; RetailRocket: visitorid, event).
_CSV_ROLES = {
    "event_id": ("eventid", "id", "eventuuid", "messageid"),
    "type": ("type", "eventtype", "event", "eventname", "action"),
    "user_id": ("userid", "visitorid", "customerid", "user", "uid", "memberid"),
    "anonymous_id": ("anonymousid", "anonid", "deviceid", "cookieid", "clientid"),
    "session_id": ("sessionid", "usersession", "session", "visitid"),
    "timestamp": ("timestamp", "eventtime", "eventtimestamp", "time", "ts", "datetime", "date", "createdat"),
    "value": ("value", "revenue"),
    "properties": ("properties", "props"),
}
_PRICE_COLUMNS = ("price", "amount", "total", "ordervalue", "ordertotal")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def csv_columns_map(header: list[str]) -> dict[str, str]:
    """CSV column → event field; columns of no role go to `properties` under their own name."""
    taken: dict[str, str] = {}
    for role, aliases in _CSV_ROLES.items():
        for alias in aliases:
            column = next((c for c in header if _norm(c) == alias and c not in taken), None)
            if column is not None:
                taken[column] = role
                break
    return {column: taken.get(column, "") for column in header}


def _csv_timestamp(text: str):
    """ISO 8601, "2019-10-01 00:00:00 UTC", or epoch digits (10 = seconds, 13 = milliseconds)."""
    if text.isdigit():
        return int(text) * (1000 if len(text) <= 10 else 1)
    for suffix in (" UTC", " GMT", " Z"):
        if text.endswith(suffix):
            return text[: -len(suffix)] + "+00:00"
    return text


def _csv_scalar(text: str):
    if _NUMBER.fullmatch(text) and len(text) <= 15:
        return float(text) if "." in text else int(text)
    return text


def _csv_event(row: dict, columns: dict[str, str]) -> dict:
    """A CSV row as an event. Without an event id column, the id is a digest of the row, so importing
    the same file twice still stores each event once."""
    event: dict = {}
    properties: dict = {}
    for column, text in row.items():
        if column is None or text is None or text == "":
            continue
        role = columns.get(column, "")
        if role == "value":
            try:
                event["value"] = float(text)
            except ValueError:
                event["value"] = text  # validation names the field
        elif role == "properties":
            try:
                decoded = orjson.loads(text)
            except orjson.JSONDecodeError:
                decoded = text
            if isinstance(decoded, dict):
                properties.update(decoded)
            else:
                event["properties"] = decoded  # validation names the field
        elif role == "timestamp":
            event["timestamp"] = _csv_timestamp(text.strip())
        elif role:
            event[role] = text
        else:
            properties[column] = _csv_scalar(text)
    if properties and "properties" not in event:
        event["properties"] = properties
    if event.get("type") == "purchase" and "value" not in event:
        # Exports often carry the order value as the row's price or amount.
        price = next((properties[c] for c in properties if _norm(c) in _PRICE_COLUMNS), None)
        if isinstance(price, int | float):
            event["value"] = float(price)
    if "event_id" not in event:
        cells = [[column, text] for column, text in row.items() if column is not None]
        digest = hashlib.sha256(orjson.dumps(cells)).hexdigest()[:32]
        event["event_id"] = f"csv-{digest}"
    return event


@dataclass(frozen=True)
class LongLine:
    """A line longer than MAX_LINE_BYTES, skipped unread: only its size is kept."""

    size: int


def body_lines(pieces: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[bytes | LongLine]:
    """The lines of a body that arrives in pieces of any size (reads of a socket or a file, or lines),
    each with its line ending; a last line without one counts. A line longer than `max_line` comes out
    as LongLine, its bytes dropped as they arrive, so memory stays under `max_line` + one piece.

    Servers' own line reading is not relied on: granian's `wsgi.input.readline()` returns the first
    line without its newline and drops the rest of the body, and Django reads a chunked body (no
    Content-Length) as empty."""
    lines = _split(pieces, max_line)
    first = next(lines, None)
    if first is None:
        return
    yield first.removeprefix(_BOM) if isinstance(first, bytes) else first
    yield from lines


def _split(pieces: Iterable[bytes], max_line: int) -> Iterator[bytes | LongLine]:
    held = bytearray()
    dropped = 0  # bytes of an over-long line dropped so far; 0 while the current line is kept
    for piece in pieces:
        start = 0
        while (newline := piece.find(b"\n", start)) >= 0:
            part = piece[start : newline + 1]
            start = newline + 1
            if dropped or len(held) + len(part) > max_line:
                yield LongLine(dropped + len(held) + len(part))
            elif held:
                held += part
                yield bytes(held)
            else:
                yield part
            held.clear()
            dropped = 0
        rest = piece[start:]
        if dropped or len(held) + len(rest) > max_line:
            dropped += len(held) + len(rest)
            held.clear()
        else:
            held += rest
    if dropped:
        yield LongLine(dropped)
    elif held:
        yield bytes(held)


def _long_line_error(line: LongLine) -> BatchError:
    return BatchError(
        "line", f"is {line.size:,} bytes, over the {MAX_LINE_BYTES:,} one event may take; shorten its properties"
    )


def _records(pieces: Iterable[bytes], fmt: str, progress: ImportProgress) -> Iterator[tuple[int, object]]:
    """(line number, decoded event or the reason it could not be decoded) for each non-empty line."""
    if fmt not in ("jsonl", "csv"):
        raise ImportFormatError(f"format must be jsonl or csv, not {fmt!r}")
    lines = body_lines(pieces)
    if fmt == "jsonl":
        for number, raw in enumerate(lines, start=1):
            if isinstance(raw, LongLine):
                progress.bytes_read += raw.size
                yield number, _long_line_error(raw)
                continue
            progress.bytes_read += len(raw)
            if not raw.strip():
                continue
            try:
                yield number, orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield number, BatchError("line", f"is not valid JSON ({exc.msg}); one event object per line")
        return

    too_long: list[tuple[int, BatchError]] = []  # reported in line order among the rows

    def text() -> Iterator[str]:
        for number, raw in enumerate(lines, start=1):
            if isinstance(raw, LongLine):
                progress.bytes_read += raw.size
                too_long.append((number, _long_line_error(raw)))
                yield "\n"  # an empty row, which the reader skips; the line numbers stay right
                continue
            progress.bytes_read += len(raw)
            # A line of spaces is blank, as in JSONL, not a row with one odd cell.
            yield raw.decode("utf-8", errors="replace") if raw.strip() else "\n"

    reader = csv.DictReader(text())
    columns = csv_columns_map(list(reader.fieldnames or []))
    if "type" not in columns.values():
        raise ImportFormatError(
            "the CSV header has no event type column (type, event_type, event or event_name); the columns are "
            + ", ".join(CSV_COLUMNS)
            + ", and any other column becomes a property"
        )
    for row in reader:
        yield from too_long
        too_long.clear()
        yield reader.line_num, _csv_event(row, columns)
    yield from too_long


def _queued(client, project_id: int) -> int:
    return int(client.hget(rkeys.EVENTS_QUEUED, str(project_id)) or 0)


def _wait_for_drain(project_id: int, stop_waiting_after: float = 600.0) -> None:
    """Wait while the project has more than half its cap of events waiting for the drain, so an
    import never pushes live traffic over the cap (which would answer it 503)."""
    client = redis_client.worker()
    high_water = settings.KAIROS_STREAM_CAP_PER_PROJECT // 2
    deadline = time.monotonic() + stop_waiting_after
    while _queued(client, project_id) > high_water and time.monotonic() < deadline:
        time.sleep(0.2)


def _ingest(project_id: int, events: list, attempts: int = 30):
    """events_ingest without the age limit; over the project's cap anyway, wait as told and retry."""
    attempt = 1
    while True:
        try:
            return events_ingest(project_id=project_id, payload={"events": events}, max_past=None)
        except Throttled as exc:
            if attempt >= attempts:
                raise
            attempt += 1
            time.sleep(exc.retry_after)


def events_import_steps(
    *, project_id: int, body: Iterable[bytes], fmt: str = "jsonl", batch_size: int = MAX_BATCH
) -> Iterator[ImportProgress]:
    """Import events of any age a batch at a time, yielding the running totals after every batch
    (the last yield is the final result). Progress bars and streamed answers follow it. `body` is
    the file in pieces of any size (body_lines splits it).

    A line that is not an event is reported with its line number and the fix; the others are
    taken. Raises ImportFormatError for an unreadable file (nothing taken), redis.RedisError when
    the event stream is down and throttle.Throttled when the drain does not catch up for minutes
    (the batches sent so far are kept: re-run the same file).
    """
    progress = ImportProgress()
    batch: list[tuple[int, object]] = []

    def send() -> None:
        good = [(n, e) for n, e in batch if not isinstance(e, BatchError)]
        for n, bad in batch:
            if isinstance(bad, BatchError):
                _reject(progress, n, bad.field, bad.message)
        if good:
            _wait_for_drain(project_id)
            result = _ingest(project_id, [e for _, e in good])
            progress.accepted += len(result.accepted)
            progress.duplicates += result.duplicates
            progress.dropped_noise += result.dropped_noise
            for item in result.rejected:
                _reject(progress, good[item["index"]][0], item["field"], item["message"])
            progress.warnings_count += len(result.warnings)
            for item in result.warnings[: max(0, _MAX_REPORTED - len(progress.warnings))]:
                line = good[item["index"]][0]
                progress.warnings.append({"line": line, "field": item["field"], "message": item["message"]})
        batch.clear()

    for number, record in _records(body, fmt, progress):
        progress.lines = number
        batch.append((number, record))
        if len(batch) >= batch_size:
            send()
            yield progress
    send()
    yield progress


def events_import(*, project_id: int, body: Iterable[bytes], fmt: str = "jsonl", on_progress=None) -> ImportProgress:
    """events_import_steps run to the end; `on_progress(progress)` after every batch."""
    progress = ImportProgress()
    for progress in events_import_steps(project_id=project_id, body=body, fmt=fmt):
        if on_progress is not None:
            on_progress(progress)
    return progress


def _reject(progress: ImportProgress, line: int, field_name: str, message: str) -> None:
    progress.rejected_count += 1
    if len(progress.rejected) < _MAX_REPORTED:
        progress.rejected.append({"line": line, "field": field_name, "message": message})


def body_pieces(stream: io.RawIOBase | io.BufferedIOBase) -> Iterator[bytes]:
    """A binary stream read READ_BYTES at a time (never the whole file, nor a whole long line)."""
    yield from iter(lambda: stream.read(READ_BYTES), b"")
