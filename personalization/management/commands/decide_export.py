"""Assignments for a list of ids as CSV: `manage.py decide_export --project SLUG --ids ids.csv --out out.csv`.

The same as `POST /api/v1/decide/export`: every id is decided by batch decide (so the ids are
assigned and exposed as if they had been decided for the send; a second export of the same ids
gives the same variants, now `sticky`). ids.csv holds one id a line in its first column, with an
optional header `user_id` or `anonymous_id` naming their kind. Any number of ids: they are decided
in calls of batch decide's maximum.
"""

import csv
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from personalization import selectors
from personalization.decide import batch, batch_csv
from personalization.decide.runtime import DecideInputError


class Command(BaseCommand):
    help = "Decide a list of ids (a CSV file) and write their assignments as CSV, one row per id and experience."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="the project's slug (or id)")
        parser.add_argument(
            "--ids", required=True, type=Path, help="CSV: an id a line (header: user_id or anonymous_id)"
        )
        parser.add_argument("--out", required=True, type=Path, help="the CSV file to write")
        parser.add_argument("--experiences", default="", help="experience keys, comma-separated (default: all running)")

    def handle(self, *args, project: str, ids: Path, out: Path, experiences: str, **options):
        target = selectors.project_by_slug_or_id(value=project)
        if target is None:
            raise CommandError(f"--project {project!r}: no project with that slug or id; see manage.py project_create")
        try:
            units, lines = batch_csv.ids_read(ids.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"--ids {ids}: cannot be read as UTF-8 text ({exc})") from None
        except batch_csv.IdsError as exc:
            raise CommandError(f"--ids {ids}: {exc.message}") from None
        keys = [key.strip() for key in experiences.split(",") if key.strip()] or None
        rows = 0
        with out.open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(batch_csv.EXPORT_HEADER)
            for start in range(0, len(units), batch.MAX_UNITS):
                body = {"units": units[start : start + batch.MAX_UNITS], "experiences": keys}
                try:
                    chunks = batch.decide_batch(target.pk, body)
                except DecideInputError as exc:
                    field = batch_csv.field_on_line(exc.field, lines[start : start + batch.MAX_UNITS])
                    raise CommandError(f"--ids {ids}, {field}: {exc.message}") from None
                for chunk in chunks:
                    for row in batch_csv.export_rows(chunk):
                        writer.writerow(row)
                        rows += 1
        self.stdout.write(self.style.SUCCESS(f"{len(units):,} ids decided, {rows:,} assignments written to {out}"))
