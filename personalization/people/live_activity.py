"""Reads of the live session state for the dashboard: who was active in the last hour, their
sessions by journey stage, and one visitor's state for a developer debugging.

Which visitors were active comes from the index the live script keeps (rkeys.live_active: unit id →
second of its last event, trimmed to one hour), not from scanning unit hashes: a SCAN walks every
key of every project (the unit hashes live 180 days), the index only the last hour's visitors. The
pages read at most ACTIVE_READ_LIMIT of them, the most recent first, and say so when there were more.

The index holds unit ids, so it is personal data: privacy walks it with the handlers at the end
(`live_active_read`, `live_active_delete`, `live_active_count`).
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

from personalization import redis_client, rkeys
from personalization.decide.context import local_time
from personalization.experiences.conditions import facts_of
from personalization.people.journey import STAGES, JourneyDefinitionError, Stage, journey_definition, stage_of
from personalization.people.live_session import ACTIVE_WINDOW_SECONDS, SessionView, live_state_parse, session_view

# How many of the last hour's visitors a page reads (most recent first). Their hashes are read with
# HMGET in pipelines of READ_CHUNK: about 10 ms per thousand on the development machine.
ACTIVE_READ_LIMIT = 10_000
READ_CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """What reading a project's live state needs from the project."""

    idle_seconds: int
    time_zone: str
    definition: tuple[dict, ...]


def live_settings_of(project) -> LiveSettings:
    try:
        definition = journey_definition(project.journey)
    except JourneyDefinitionError:
        definition = journey_definition()  # as decide does (decide/compile.py)
    return LiveSettings(project.live_idle_minutes * 60, project.time_zone or "UTC", definition)


@dataclass(frozen=True, slots=True)
class ActiveUnits:
    """The last hour's visitors as far as a page read them."""

    total: int  # active in the window, by the index
    read: int  # of those, how many were read (the most recent ones)
    units: list[tuple[str, dict[str, str]]]  # (unit id, the requested fields of its hash)

    @property
    def capped(self) -> bool:
        return self.read < self.total


def live_active_units(
    *, project_id: int, fields: tuple[str, ...], now: float | None = None, limit: int = ACTIVE_READ_LIMIT
) -> ActiveUnits:
    """The units with an event in the last ACTIVE_WINDOW_SECONDS (most recent first, at most `limit`)
    and the `fields` of their unit hashes (a field the hash lacks is left out)."""
    now = time.time() if now is None else now
    client = redis_client.worker()
    key, since = rkeys.live_active(project_id), int(now) - ACTIVE_WINDOW_SECONDS
    total = client.zcount(key, since, "+inf")
    ids = [u.decode() for u in client.zrevrangebyscore(key, "+inf", since, start=0, num=limit)] if total else []
    units: list[tuple[str, dict[str, str]]] = []
    for start in range(0, len(ids), READ_CHUNK):
        part = ids[start : start + READ_CHUNK]
        pipe = client.pipeline(transaction=False)
        for unit_id in part:
            pipe.hmget(rkeys.unit(project_id, unit_id), fields)
        for unit_id, values in zip(part, pipe.execute(), strict=True):
            units.append((unit_id, {f: v.decode() for f, v in zip(fields, values, strict=True) if v is not None}))
    return ActiveUnits(total=total, read=len(ids), units=units)


def live_facts(user: dict[str, str], *, settings: LiveSettings, now: float) -> tuple[SessionView, Stage, dict] | None:
    """A visitor's session as of now, its journey stage and the targeting facts decide would build,
    except those only a request knows (device and referrer, left unknown). None without live state."""
    state = live_state_parse(user)
    if state is None:
        return None
    view = session_view(state, now=now, idle_seconds=settings.idle_seconds)
    stage = stage_of(view, settings.definition)
    hour, weekday = local_time(now, settings.time_zone)
    context = {"local_hour": hour, "weekday": weekday, "device": None, "referrer": None}
    return view, stage, facts_of(view, context, stage.stage)


@dataclass(frozen=True, slots=True)
class StageCounts:
    counts: dict[str, int]  # every stage, in STAGES order
    active: ActiveUnits


def sessions_by_stage(*, project, now: float | None = None) -> StageCounts:
    """The last hour's sessions by their journey stage now (ended ones included: they are the ones
    that read as abandoned or bought). Opted-out visitors keep no state and are not counted."""
    now = time.time() if now is None else now
    settings = live_settings_of(project)
    active = live_active_units(project_id=project.pk, fields=rkeys.UNIT_LIVE_FIELDS, now=now)
    counts = dict.fromkeys(STAGES, 0)
    for _, user in active.units:
        state = live_state_parse(user)
        if state is not None:
            counts[
                stage_of(session_view(state, now=now, idle_seconds=settings.idle_seconds), settings.definition).stage
            ] += 1
    return StageCounts(counts=counts, active=active)


def visitor_live(*, project, unit_id: str, now: float | None = None) -> dict:
    """One visitor's live state for the timeline: the session view, the stage and its reason, the
    facts targeting reads, whether the hash says do-not-personalize, and the second of the last
    event as the active index has it (None after an hour)."""
    now = time.time() if now is None else now
    client = redis_client.worker()
    pipe = client.pipeline(transaction=False)
    pipe.hmget(rkeys.unit(project.pk, unit_id), (*rkeys.UNIT_LIVE_FIELDS, "dnp"))
    pipe.zscore(rkeys.live_active(project.pk), unit_id)
    (*raw, dnp), last_active = pipe.execute()
    user = {name: value.decode() for name, value in zip(rkeys.UNIT_LIVE_FIELDS, raw, strict=True) if value is not None}
    found = live_facts(user, settings=live_settings_of(project), now=now)
    result = {"found": found is not None, "opted_out": dnp == b"1", "last_active": last_active}
    if found is not None:
        view, stage, facts = found
        result.update(view=view, stage=stage, facts=facts)
    return result


# --- privacy handlers of the index (registered in personal_locations.py) ---------------------------


def live_active_read(*, project_id: int, unit_ids: list[str]) -> Iterator[dict]:
    if not unit_ids:
        return
    scores = redis_client.worker().zmscore(rkeys.live_active(project_id), unit_ids)
    for unit_id, score in zip(unit_ids, scores, strict=True):
        if score is not None:
            yield {"unit_id": unit_id, "last_event_at": int(score)}


def live_active_delete(*, project_id: int, unit_ids: list[str]) -> int:
    if not unit_ids:
        return 0
    return redis_client.worker().zrem(rkeys.live_active(project_id), *unit_ids)


def live_active_count(*, project_id: int, unit_ids: list[str]) -> int:
    if not unit_ids:
        return 0
    scores = redis_client.worker().zmscore(rkeys.live_active(project_id), unit_ids)
    return sum(score is not None for score in scores)
