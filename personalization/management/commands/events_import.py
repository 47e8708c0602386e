"""Import event history of any age: `manage.py events_import FILE.jsonl|FILE.csv --project SLUG`.

JSONL: one event object per line, exactly as in `POST /api/v1/events`. CSV: a header row; columns are
found by role under common spellings (event_type, event_time, visitorid, user_session…) and every
other column becomes a property (personalization.ingest.history.csv_columns_map). Read a line at a
time, so any size works; re-running the same file stores nothing twice.
"""

import os
from pathlib import Path

import redis
from django.core.management.base import BaseCommand, CommandError

from personalization import selectors
from personalization.ingest.history import ImportFormatError, body_pieces, events_import
from personalization.throttle import Throttled


class Command(BaseCommand):
    help = "Import events of any age from a JSONL or CSV file into a project (idempotent by event_id)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="a .jsonl or .csv file")
        parser.add_argument("--project", required=True, help="the project's slug (or id)")
        parser.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file name's extension")

    def handle(self, *args, file: Path, project: str, format: str | None, **options):
        target = selectors.project_by_slug_or_id(value=project)
        if target is None:
            raise CommandError(f"--project {project!r}: no project with that slug or id; see manage.py project_create")
        by_extension = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
        fmt = format or by_extension.get(file.suffix.lower())
        if fmt is None:
            raise CommandError(f"{file}: cannot tell the format from the extension; add --format jsonl or --format csv")
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        total = max(os.path.getsize(file), 1)

        def show(progress) -> None:
            pct = min(100, progress.bytes_read * 100 // total)
            bar = "#" * (pct // 4)
            self.stdout.write(
                f"\r[{bar:<25}] {pct:3d} %  {progress.lines:,} lines  {progress.accepted:,} accepted"
                f"  {progress.duplicates:,} duplicates  {progress.rejected_count:,} rejected",
                ending="",
            )
            self.stdout.flush()

        with file.open("rb") as handle:
            try:
                result = events_import(project_id=target.pk, body=body_pieces(handle), fmt=fmt, on_progress=show)
            except ImportFormatError as exc:
                raise CommandError(f"{file}: {exc}") from None
            except (redis.RedisError, Throttled) as exc:
                raise CommandError(
                    f"the event stream cannot take more now ({exc}); run the same command again later:"
                    " events already sent are not stored twice"
                ) from None
        self.stdout.write("")
        for item in result.rejected:
            self.stdout.write(f"  line {item['line']}: {item['field']} {item['message']}")
        for item in result.warnings[:10]:
            self.stdout.write(f"  line {item['line']} (warning): {item['field']} {item['message']}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.accepted:,} events queued for {target.name} ({result.duplicates:,} repeated in the file,"
                f" {result.rejected_count:,} rejected, {result.warnings_count:,} warnings); the worker stores them"
                " within seconds, once per event_id."
            )
        )
