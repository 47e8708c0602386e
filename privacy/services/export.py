"""Access and portability (Art. 15/20): a ZIP of everything the registry holds about the subject.

data.json (machine-readable, every location), one CSV per location, and summary.txt, which says
what Art. 15 asks for: purposes, categories, recipients, retention, source, and the profiling (the
segments the person is in, and the experiences and variants they were shown with the reason).

Rows are streamed from the database in chunks straight into the ZIP, so memory stays flat however
many events the subject has. The file is written under a temporary name and renamed when complete.
"""

import csv
import io
import os
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zipfile import ZIP_DEFLATED, ZipFile

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from privacy import registry
from privacy.models import DataSubjectRequest
from privacy.services.jobs import Progress, _finish, subject_fix

RECIPIENTS = (
    "No one outside your organisation: Kairos runs on your own servers. Data is processed by "
    "the Kairos services (web, decide, workers) and stored in your PostgreSQL and Redis."
)
SOURCE = (
    "Collected from the person's use of the site or app (the Kairos snippet or server calls), "
    "and attributes the site sent with an identify call."
)


def _plain(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "tolist"):  # a pgvector embedding arrives as a numpy array
        return value.tolist()
    raise TypeError(f"cannot export {type(value).__name__}")


def _cell(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=_json_default).decode()
    return str(_plain(value))


class _Profiling:
    """What the summary says about profiling, gathered while the rows stream past."""

    def __init__(self):
        self.shown: Counter = Counter()
        self.segments: set[str] = set()
        self.behaviors: Counter = Counter()
        self.why: list[str] = []

    def see(self, location: str, row: dict) -> None:
        if location == "exposures":
            self.shown[(row["experience_key"], row["variant_key"] or row["arm"], row["reason"])] += 1
            if row.get("segment"):
                self.segments.add(row["segment"])
        elif location == "segment_memberships":
            self.segments.add(row.get("segment__name") or row.get("segment__key") or "")
        elif location == "profiling_explanations":
            self.why.append(row["why"])
        elif location == "decide_hash":
            self.segments.update((row["fields"].get("segs") or "").split())


def _summary(request: DataSubjectRequest, counts: dict[str, int], profiling: _Profiling) -> str:
    lines = [
        f"Your data held by this site — request {request.reference}, {timezone.now():%Y-%m-%d %H:%M} UTC",
        "",
        "What we hold (categories), why (purposes), and for how long (retention):",
    ]
    for loc in registry.locations():
        lines += [
            f"- {loc.category}: {counts.get(loc.name, 0)} record(s) [{loc.name}.csv]",
            f"    purpose: {loc.purpose}",
            f"    kept: {loc.retention}",
        ]
    lines += ["", f"Recipients: {RECIPIENTS}", f"Source: {SOURCE}", "", "Profiling and automated decisions:"]
    lines.append(
        "  The site shows some people different versions of its pages (experiences) and learns which "
        "version works best. Which version you see depends on a random draw fixed for your id, on the "
        "targeting rules of the experience, and for adaptive experiences on how each version performed."
    )
    if profiling.segments:
        lines.append(f"  Segments you are in: {', '.join(sorted(profiling.segments))}.")
    else:
        lines.append("  You are in no behavior segment.")
    if profiling.why:
        lines.append("  Why (worked out from the data above):")
        lines += [f"    - {line}" for line in profiling.why]
    if profiling.behaviors:
        top = ", ".join(f"{name} ({n})" for name, n in profiling.behaviors.most_common(8))
        lines.append(f"  The behavior these rely on: {top}.")
    if profiling.shown:
        lines.append("  Experiences you were shown, the version, and why (reason code):")
        for (experience, variant, reason), _ in sorted(profiling.shown.items()):
            lines.append(f"    - {experience}: {variant} ({reason or 'assigned'})")
    else:
        lines.append("  You were not shown any experience.")
    lines += [
        "",
        "Reason codes: fixed_split / bandit / segment_bandit = assigned by the experience's allocation; "
        "sticky = the version you saw before; holdout_global / holdout_experience = kept on the default "
        "to measure the effect; targeting_miss = not targeted; not_personalized = you opted out.",
        "",
        "Your rights: you may ask for erasure, object to profiling (we then stop personalizing for you and "
        "delete the profiling data), or ask us to restrict processing.",
    ]
    return "\n".join(lines) + "\n"


def _json_rows(loc: registry.Location, subject: registry.Subject, profiling: _Profiling) -> Iterator[bytes]:
    """The location's rows as JSON texts: written by PostgreSQL for tables (a server-side cursor,
    EXPORT_CHUNK rows at a time), by orjson for the rest and for the few rows the summary reads."""
    if loc.sql is None or loc.name == "exposures" or loc.profiling:  # these feed the summary's profiling section
        for row in loc.export(subject):
            profiling.see(loc.name, row)
            yield orjson.dumps(row, default=_json_default)
        return
    with transaction.atomic(), connection.connection.cursor(name=f"export_{loc.name}") as cursor:
        cursor.itersize = registry.EXPORT_CHUNK
        cursor.execute(f"SELECT row_to_json(r)::text FROM ({loc.sql(subject)}) r")
        for (text,) in cursor:
            yield text.encode()


def _write_json(archive: ZipFile, subject: registry.Subject, request, progress, profiling, counts) -> None:
    with archive.open("data.json", "w") as out:
        header = {"request": request.reference, "generated_at": timezone.now().isoformat()}
        out.write(orjson.dumps(header)[:-1] + b', "locations": {')
        for n, loc in enumerate(registry.locations()):
            out.write((b", " if n else b"") + orjson.dumps(loc.name) + b": [")
            count = 0
            for text in _json_rows(loc, subject, profiling):
                out.write((b", " if count else b"") + text)
                count += 1
                if count % registry.EXPORT_CHUNK == 0:
                    progress.add(registry.EXPORT_CHUNK)
            progress.add(count % registry.EXPORT_CHUNK)
            counts[loc.name] = count
            out.write(b"]")
        out.write(b"}}")


def _write_csvs(archive: ZipFile, subject: registry.Subject, progress) -> None:
    for loc in registry.locations():
        with archive.open(f"{loc.name}.csv", "w") as raw:
            if loc.sql is not None:
                with connection.cursor() as cursor:
                    copy_sql = f"COPY ({loc.sql(subject)}) TO STDOUT WITH (FORMAT csv, HEADER true)"
                    with cursor.cursor.copy(copy_sql) as copy:
                        for block in copy:
                            raw.write(block)
                progress.add(1)
                continue
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = csv.writer(text)
            writer.writerow(loc.columns)
            for row in loc.export(subject):
                writer.writerow([_cell(row.get(column)) for column in loc.columns])
            progress.add(1)
            text.flush()
            text.detach()


def _behaviors(subject: registry.Subject) -> Counter:
    """Event types the subject's behavior consists of, counted by PostgreSQL."""
    loc = registry.location("events")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT type, count(*) FROM ({loc.sql(subject)}) r GROUP BY type")
        return Counter(dict(cursor.fetchall()))


def export_path_for(request: DataSubjectRequest) -> Path:
    folder = Path(settings.KAIROS_EXPORT_DIR) / str(request.project_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{request.reference}-{secrets.token_hex(8)}.zip"


def subject_export(*, request: DataSubjectRequest) -> Path:
    """Build the ZIP for an access request; returns its path. Run again, it builds a fresh one."""
    subject = subject_fix(request=request)
    total = sum(loc.verify(subject) for loc in registry.locations()) + len(registry.locations())
    progress = Progress(request, total)
    progress.step("writing the export")
    path = export_path_for(request)
    partial = path.with_suffix(".part")
    profiling, counts = _Profiling(), {}
    with ZipFile(partial, "w", compression=ZIP_DEFLATED, compresslevel=1) as archive:
        _write_json(archive, subject, request, progress, profiling, counts)
        _write_csvs(archive, subject, progress)
        profiling.behaviors = _behaviors(subject)
        archive.writestr("summary.txt", _summary(request, counts, profiling))
    os.replace(partial, path)
    old = request.export_path
    request.export_path = str(path)
    request.export_expires_at = timezone.now() + timedelta(hours=settings.KAIROS_EXPORT_LINK_HOURS)
    request.save(update_fields=["export_path", "export_expires_at", "updated_at"])
    if old and old != str(path):
        Path(old).unlink(missing_ok=True)
    certificate = {
        "request": request.reference,
        "records": counts,
        "bytes": path.stat().st_size,
        "completed_at": timezone.now().isoformat(),
        "link_expires_at": request.export_expires_at.isoformat(),
    }
    _finish(request, certificate, "exported")
    return path
