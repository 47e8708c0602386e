"""What the privacy app needs from personalization about one person: finding their profiles, their
decide hashes and their events still waiting in the stream, and switching personalization off.

The registry of personal data (personal_locations.py) calls these as the handlers of the Redis
locations; PostgreSQL rows are handled by the registry's table handlers.
"""

from collections.abc import Iterator

import orjson
from django.db import connection, transaction
from django.db.models import Q

from personalization import redis_client, rkeys
from personalization.decide.units import profiles_publish
from personalization.intent_fields import INTENT_FACT, UNIT_INTENTS_FIELD, intents_parse
from personalization.models import Profile, ProfileIdentity
from personalization.score_fields import UNIT_SCORES_FIELD, scores_parse
from personalization.signals import profiles_opted_out

_STREAM_PAGE = 500


def subject_resolve(
    *, project_id: int, user_ids: list[str], anonymous_ids: list[str], emails: list[str]
) -> tuple[list[int], list[str]]:
    """The profiles a person's identifiers point to, and every unit id (user and anonymous) they
    are known by, including ids stitched to those profiles that the request did not name."""
    ids = [*user_ids, *anonymous_ids]
    found = set(
        ProfileIdentity.objects.filter(project_id=project_id, value__in=ids).values_list("profile_id", flat=True)
    )
    query = Q(external_id__in=user_ids) if user_ids else Q(pk__in=[])
    for email in emails:
        query |= Q(attributes__email=email)
    found |= set(Profile.objects.filter(query, project_id=project_id).values_list("pk", flat=True))
    units = set(ids)
    units |= set(ProfileIdentity.objects.filter(profile_id__in=found).values_list("value", flat=True))
    units |= {u for u in Profile.objects.filter(pk__in=found).values_list("external_id", flat=True) if u}
    return sorted(found), sorted(units)


def unit_hashes_read(*, project_id: int, unit_ids: list[str]) -> Iterator[dict]:
    client = redis_client.worker()
    for unit_id in unit_ids:
        fields = client.hgetall(rkeys.unit(project_id, unit_id))
        if fields:
            yield {"unit_id": unit_id, "fields": {k.decode(): v.decode() for k, v in fields.items()}}


def unit_hashes_delete(*, project_id: int, unit_ids: list[str]) -> int:
    if not unit_ids:
        return 0
    return redis_client.worker().delete(*(rkeys.unit(project_id, u) for u in unit_ids))


def unit_hashes_count(*, project_id: int, unit_ids: list[str]) -> int:
    if not unit_ids:
        return 0
    return redis_client.worker().exists(*(rkeys.unit(project_id, u) for u in unit_ids))


def unit_hashes_unprofile(*, project_id: int, unit_ids: list[str]) -> None:
    """Objection to profiling: drop the behavior segments, predictive scores and the live session
    state decide reads, keep the rest (the do-not-personalize flag set with it keeps the state from coming back)."""
    pipe = redis_client.worker().pipeline(transaction=False)
    for unit_id in unit_ids:
        pipe.hdel(
            rkeys.unit(project_id, unit_id), "segs", UNIT_SCORES_FIELD, UNIT_INTENTS_FIELD, *rkeys.UNIT_LIVE_FIELDS
        )
    pipe.execute()


def unit_scores_read(*, project_id: int, unit_ids: list[str]) -> Iterator[dict]:
    """The predictive scores decide holds for each id, as the targeting facts they give."""
    for unit_id, raw in _unit_field_values(project_id, unit_ids, UNIT_SCORES_FIELD):
        yield {"unit_id": unit_id, "scores": scores_parse(raw)}


def unit_scores_delete(*, project_id: int, unit_ids: list[str]) -> int:
    return _unit_field_delete(project_id, unit_ids, UNIT_SCORES_FIELD)


def unit_scores_count(*, project_id: int, unit_ids: list[str]) -> int:
    return _unit_field_count(project_id, unit_ids, UNIT_SCORES_FIELD)


def unit_intents_read(*, project_id: int, unit_ids: list[str]) -> Iterator[dict]:
    """The intent scores decide holds for each id: {intent key: score}."""
    for unit_id, raw in _unit_field_values(project_id, unit_ids, UNIT_INTENTS_FIELD):
        yield {"unit_id": unit_id, "intents": intents_parse(raw).get(INTENT_FACT + "[]", {})}


def unit_intents_delete(*, project_id: int, unit_ids: list[str]) -> int:
    return _unit_field_delete(project_id, unit_ids, UNIT_INTENTS_FIELD)


def unit_intents_count(*, project_id: int, unit_ids: list[str]) -> int:
    return _unit_field_count(project_id, unit_ids, UNIT_INTENTS_FIELD)


def _unit_field_values(project_id: int, unit_ids: list[str], field: str) -> Iterator[tuple[str, str]]:
    pipe = redis_client.worker().pipeline(transaction=False)
    for unit_id in unit_ids:
        pipe.hget(rkeys.unit(project_id, unit_id), field)
    for unit_id, raw in zip(unit_ids, pipe.execute(), strict=True):
        if raw is not None:
            yield unit_id, raw.decode()


def _unit_field_delete(project_id: int, unit_ids: list[str], field: str) -> int:
    pipe = redis_client.worker().pipeline(transaction=False)
    for unit_id in unit_ids:
        pipe.hdel(rkeys.unit(project_id, unit_id), field)
    return sum(pipe.execute())


def _unit_field_count(project_id: int, unit_ids: list[str], field: str) -> int:
    pipe = redis_client.worker().pipeline(transaction=False)
    for unit_id in unit_ids:
        pipe.hexists(rkeys.unit(project_id, unit_id), field)
    return sum(pipe.execute())


def _stream_pages(client) -> Iterator[tuple[bytes, dict]]:
    start = "-"
    while True:
        page = client.xrange(rkeys.EVENTS_STREAM, min=start, max="+", count=_STREAM_PAGE)
        yield from page
        if len(page) < _STREAM_PAGE:
            return
        start = "(" + page[-1][0].decode()


def _is_subject(event: dict, units: set[str]) -> bool:
    return event.get("user_id") in units or event.get("anonymous_id") in units


def stream_events_read(*, project_id: int, unit_ids: list[str]) -> Iterator[dict]:
    """Events of these ids accepted but not yet drained into PostgreSQL."""
    units = set(unit_ids)
    for _, fields in _stream_pages(redis_client.worker()):
        if fields and int(fields[b"p"]) == project_id:
            yield from (e for e in orjson.loads(fields[b"d"]) if _is_subject(e, units))


def stream_events_purge(*, project_id: int, unit_ids: list[str]) -> int:
    """Remove these ids' events from the stream, keeping everyone else's: an entry holding them is
    added again without them, then deleted. A crash in between leaves both copies; the drain stores
    each event once whatever the copies (unique event_id), so nothing is lost or doubled."""
    units = set(unit_ids)
    client = redis_client.worker()
    removed = 0
    for entry_id, fields in list(_stream_pages(client)):
        if not fields or int(fields[b"p"]) != project_id:
            continue
        events = orjson.loads(fields[b"d"])
        kept = [e for e in events if not _is_subject(e, units)]
        if len(kept) == len(events):
            continue
        pipe = client.pipeline(transaction=True)
        if kept:
            pipe.xadd(rkeys.EVENTS_STREAM, {"p": project_id, "d": orjson.dumps(kept), "r": fields[b"r"]})
        pipe.xdel(rkeys.EVENTS_STREAM, entry_id)
        pipe.hincrby(rkeys.EVENTS_QUEUED, str(project_id), -(len(events) - len(kept)))
        pipe.execute()
        removed += len(events) - len(kept)
    return removed


def stream_events_count(*, project_id: int, unit_ids: list[str]) -> int:
    return sum(1 for _ in stream_events_read(project_id=project_id, unit_ids=unit_ids))


def profiles_personalization_set(*, project_id: int, profile_ids: list[int], do_not_personalize: bool) -> int:
    """Switch personalization off (objection, restriction) or back on for these profiles, in
    PostgreSQL and in the decide hashes."""
    with transaction.atomic():
        changed = Profile.objects.filter(project_id=project_id, pk__in=profile_ids).update(
            do_not_personalize=do_not_personalize
        )
    profiles_publish(project_id=project_id, profile_ids=profile_ids)
    if do_not_personalize:
        _opted_out_on_commit(project_id, profile_ids)
    return changed


def _opted_out_on_commit(project_id: int, profile_ids: list[int]) -> None:
    ids = list(profile_ids)
    transaction.on_commit(lambda: profiles_opted_out.send(sender=None, project_id=project_id, profile_ids=ids))


def profiles_consent_set(*, project_id: int, consents: dict[int, dict]) -> None:
    """Merge recorded consent (purpose → granted) into profiles and publish it to decide."""
    for profile in Profile.objects.filter(project_id=project_id, pk__in=list(consents)).only("pk", "consent"):
        profile.consent = {**(profile.consent or {}), **consents[profile.pk]}
        profile.save(update_fields=["consent"])
    profiles_publish(project_id=project_id, profile_ids=list(consents))
    withdrawn = [pid for pid, purposes in consents.items() if purposes.get("personalization") is False]
    if withdrawn:
        _opted_out_on_commit(project_id, withdrawn)


def suppression_publish(*, project_id: int, digests: list[str]) -> None:
    """The erased subjects' digests, where decide checks them in its one round trip."""
    if digests:
        redis_client.worker().sadd(rkeys.suppressed(project_id), *digests)


def rows_delete_chunked(*, sql: str, params: list, chunk: int) -> int:
    """Run a DELETE of at most `chunk` rows (its LIMIT) again until it deletes fewer, each in a
    transaction of its own: a big delete holds no lock for long and keeps what it did if stopped. A
    statement that answers a row (a DELETE in a WITH, and the rows it deleted counted) is counted by it."""
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            step = cursor.fetchone()[0] if cursor.description else cursor.rowcount
        deleted += step
        if step < chunk:
            return deleted
