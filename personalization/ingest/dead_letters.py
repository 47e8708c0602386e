"""Dead letters: accepted events the drain could not store, kept with the error.

The drain writes them (services/events.py) instead of retrying a batch forever; an admin sees them
under Settings and retries them (back into the stream, after a fix) or deletes them.
"""

import logging
import reprlib
from datetime import UTC, datetime

import orjson
from django.db import transaction

from personalization import redis_client, rkeys
from personalization.models import DeadLetter

log = logging.getLogger(__name__)


def text_storable(text: str) -> str:
    """Text PostgreSQL can hold: NUL written as \\u0000, lone surrogates as backslash escapes."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def _text_of(event: dict, name: str, limit: int) -> str:
    value = event.get(name)
    return text_storable(value if isinstance(value, str) else "")[:limit]


def _time_of(raw) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


_DEAD_REPR = reprlib.Repr()  # Python 3.11 takes no keyword arguments here
_DEAD_REPR.maxlevel, _DEAD_REPR.maxstring, _DEAD_REPR.maxother = 10, 4000, 4000
_DEAD_REPR.maxdict = _DEAD_REPR.maxlist = 200


def dead_letters_write(*, dead: list[tuple]) -> int:
    """Store (project id or None, event, error) as dead letters; one already stored is skipped."""
    rows = []
    for project_id, event, error in dead:
        try:
            payload = orjson.dumps({k: v for k, v in event.items() if k != "received_at"}).decode()
        except TypeError:  # lone surrogates, nesting orjson refuses, bytes from an unreadable entry
            payload = _DEAD_REPR.repr(event)
        received = _time_of(event.get("received_at"))
        rows.append(
            DeadLetter(
                project_id=project_id,
                event_id=_text_of(event, "event_id", 64),
                user_id=_text_of(event, "user_id", 128),
                anonymous_id=_text_of(event, "anonymous_id", 128),
                payload=text_storable(payload),
                error=text_storable(error)[:2000],
                received_at=received,
            )
        )
    DeadLetter.objects.bulk_create(rows, ignore_conflicts=True)
    log.warning("drain: %d events dead-lettered (see Settings → Dead letters)", len(rows))
    return len(rows)


def dead_letters_retry(*, project_id: int, ids: list[int] | None = None) -> tuple[int, int]:
    """Put a project's dead letters (all, or `ids`) back into the stream and delete them; returns
    (retried, kept): a dead letter whose payload is not JSON any more cannot be retried and stays."""
    rows = DeadLetter.objects.filter(project_id=project_id)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    events, retried, kept = [], [], 0
    for row in rows.only("id", "payload", "received_at"):
        try:
            event = orjson.loads(row.payload)
        except orjson.JSONDecodeError:
            kept += 1
            continue
        if not isinstance(event, dict):
            kept += 1
            continue
        events.append(event)
        retried.append(row.pk)
    if not events:
        return 0, kept
    with transaction.atomic():
        # Deleted first, appended second, committed last: a failure in between leaves the rows.
        DeadLetter.objects.filter(pk__in=retried).delete()
        pipe = redis_client.worker().pipeline(transaction=True)
        received = datetime.now(UTC).isoformat()
        pipe.xadd(rkeys.EVENTS_STREAM, {"p": project_id, "d": orjson.dumps(events), "r": received})
        pipe.hincrby(rkeys.EVENTS_QUEUED, str(project_id), len(events))
        pipe.execute()
    return len(events), kept


def dead_letters_delete(*, project_id: int, ids: list[int] | None = None) -> int:
    """Delete a project's dead letters (all, or `ids`); returns how many."""
    rows = DeadLetter.objects.filter(project_id=project_id)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    return rows.delete()[0]
