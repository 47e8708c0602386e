"""The CSV sides of batch decide's export: a list of ids in, one row per assignment out. No Django."""

import csv
import io
from collections.abc import Iterable, Iterator

import orjson

ID_KINDS = ("user_id", "anonymous_id")
EXPORT_HEADER = ["unit_kind", "unit", "experience", "variant", "reason", "payload", "version", "decision_id"]


class IdsError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def ids_parse(text: str) -> list[dict]:
    """Batch decide units from a CSV of ids: the first column of each line. A first line whose first
    cell is `user_id` or `anonymous_id` is a header naming the kind of every id (default: user_id);
    blank lines are skipped."""
    return ids_read(text)[0]


def ids_read(text: str) -> tuple[list[dict], list[int]]:
    """`ids_parse`'s units and the line of the file each came from (1-based, the header counted), so
    an error about `units[7]` can name the line the integrator wrote. IdsError for a file the csv
    module cannot read, naming the line."""
    reader = csv.reader(io.StringIO(text))
    rows, lines = [], []
    try:
        for row in reader:
            if row and row[0].strip():
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as exc:  # a cell past the csv module's limit (128 KiB): an id is at most 128 characters
        raise IdsError(
            f"line {reader.line_num}", f"cannot be read as CSV ({exc}); send one id a line, at most 128 characters"
        ) from None
    kind = "user_id"
    if rows and rows[0][0].strip().lower() in ID_KINDS:
        kind = rows.pop(0)[0].strip().lower()
        lines.pop(0)
    if not rows:
        raise IdsError("ids", "has no ids; send one id a line (an optional header: user_id or anonymous_id)")
    return [{kind: row[0].strip()} for row in rows], lines


def field_on_line(field: str, lines: list[int]) -> str:
    """Batch decide's name of a field (`units[7].user_id`, `units`) as the CSV's author knows it:
    `line 9` for a unit, `ids` for the list."""
    if field == "units":
        return "ids"
    if field.startswith("units["):
        index = field[6 : field.index("]")]
        if index.isdigit() and int(index) < len(lines):
            return f"line {lines[int(index)]}"
    return field


def export_rows(answers: Iterable[dict]) -> Iterator[list]:
    """One row per (unit, experience) of batch decide's answers; the payload as JSON text."""
    for answer in answers:
        kind = "user_id" if "user_id" in answer else "anonymous_id"
        for key, assignment in answer["assignments"].items():
            payload = assignment["payload"]
            yield [
                kind,
                answer[kind],
                key,
                assignment["variant"] or "",
                assignment["reason"],
                "" if payload is None else orjson.dumps(payload).decode(),
                "" if assignment["version"] is None else assignment["version"],
                answer["decision_id"],
            ]


def csv_lines(rows: Iterable[list]) -> Iterator[str]:
    """Rows as CSV text, a line at a time (for a streamed answer)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
        yield out.getvalue()
        out.seek(0)
        out.truncate()
