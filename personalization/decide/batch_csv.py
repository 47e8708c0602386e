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
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    kind = "user_id"
    if rows and rows[0][0].strip().lower() in ID_KINDS:
        kind = rows.pop(0)[0].strip().lower()
    if not rows:
        raise IdsError("ids", "has no ids; send one id a line (an optional header: user_id or anonymous_id)")
    return [{kind: row[0].strip()} for row in rows]


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
