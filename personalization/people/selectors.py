"""Reads of people: profiles, their events, and the reads the segments app makes of them (it never
touches these tables itself).

Every read here leaves out profiles that may not be profiled: do_not_personalize set, or consent to
personalization withdrawn. Erased profiles are deleted, so they are gone from every read.
"""

from collections.abc import Iterable, Iterator
from datetime import datetime

import orjson
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from personalization.experiences.segment_migration import experience_segment_use
from personalization.models import Event, Experience, ExperienceStatus, Profile, ProfileIdentity, Project

_PROFILABLE = "NOT p.do_not_personalize AND coalesce(p.consent ->> 'personalization', 'true') <> 'false'"
# The same test on an event's person, as an anti-join: whatever the statistics say, the events are read
# once. A join let the planner drive them from the people when it took a just-imported project for a
# handful of rows (no statistics for it yet): every person scanned the project's events, 37 s for
# 100k MovieLens ratings instead of 0.3 s.
_EVENT_PROFILABLE = (
    f"NOT EXISTS (SELECT 1 FROM personalization_profile p WHERE p.id = e.profile_id AND NOT ({_PROFILABLE}))"
)
# Events that describe behavior; exposures live in their own table, identify carries no behavior.
_NOT_BEHAVIOR = ("identify", "exposure")


def behavior_clock(*, project_id: int) -> datetime:
    """The moment segments measure "recent" from: now, or the project's latest behavior when that is
    older, so that history imported from elsewhere (a public dataset, last year's logs) is segmented
    as of its own last day instead of falling outside every window."""
    now = timezone.now()
    last = Profile.objects.filter(project_id=project_id).aggregate(last=Max("last_seen"))["last"]
    return min(now, last) if last else now


def profiles_behavior(
    *,
    project_id: int,
    since: datetime,
    profile_ids: Iterable[int] | None = None,
    min_events: int = 1,
    last_events: int | None = None,
    chunk: int = 20_000,
) -> Iterator[tuple[int, list[tuple[str, datetime, dict, float | None]]]]:
    """(profile id, its events since `since` as (type, ts, properties, value)), profile by profile,
    for profilable profiles with at least `min_events` such events; only each one's latest
    `last_events` when given."""
    sql = (
        "SELECT e.profile_id, e.type, e.ts, e.properties, e.value::float8"
        + (", row_number() OVER (PARTITION BY e.profile_id ORDER BY e.ts DESC) AS latest" if last_events else "")
        + " FROM personalization_event e"
        f" WHERE e.project_id = %s AND e.ts >= %s AND e.type <> ALL(%s) AND {_EVENT_PROFILABLE}"
    )
    params: list = [project_id, since, list(_NOT_BEHAVIOR)]
    if profile_ids is not None:
        sql += " AND e.profile_id = ANY(%s)"
        params.append(list(profile_ids))
    if last_events:
        sql = f"SELECT profile_id, type, ts, properties, value FROM ({sql}) AS e WHERE latest <= %s"
        params.append(last_events)
    sql += " ORDER BY e.profile_id, e.ts"
    current, events = None, []
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk):
            for profile_id, etype, ts, properties, value in rows:
                if profile_id != current:
                    if current is not None and len(events) >= min_events:
                        yield current, events
                    current, events = profile_id, []
                # Django's psycopg setup hands raw jsonb over as text (JSONField parses it itself).
                if isinstance(properties, str | bytes):
                    properties = orjson.loads(properties)
                events.append((etype, ts, properties if isinstance(properties, dict) else {}, value))
    if current is not None and len(events) >= min_events:
        yield current, events


def profiles_behavior_ids(*, project_id: int, since: datetime, min_events: int = 1) -> list[int]:
    """Ids of the profilable profiles with at least `min_events` behavior events since `since`, in
    order: what a refit samples its fitting set from before it streams everyone's events."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.profile_id FROM personalization_event e"
            f" WHERE e.project_id = %s AND e.ts >= %s AND e.type <> ALL(%s) AND {_EVENT_PROFILABLE}"
            " GROUP BY e.profile_id HAVING count(*) >= %s ORDER BY e.profile_id",
            [project_id, since, list(_NOT_BEHAVIOR), min_events],
        )
        return [row[0] for row in cursor.fetchall()]


def profiles_recent_sample(*, project_id: int, since: datetime, size: int) -> tuple[list[int], int]:
    """(up to `size` profilable profiles seen since `since`, in a fixed pseudo-random order; how many
    there are in all): a preview estimates over the sample what the whole would take minutes to read."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.id, count(*) OVER () FROM personalization_profile p WHERE p.project_id = %s"
            f" AND p.last_seen >= %s AND {_PROFILABLE} ORDER BY hashtext(p.id::text), p.id LIMIT %s",
            [project_id, since, size],
        )
        rows = cursor.fetchall()
    return [row[0] for row in rows], (rows[0][1] if rows else 0)


def behavior_first(*, project_id: int) -> datetime | None:
    """When the project's earliest behavior event happened (imported history may go back years)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(ts) FROM personalization_event WHERE project_id = %s AND type <> ALL(%s)",
            [project_id, list(_NOT_BEHAVIOR)],
        )
        return cursor.fetchone()[0]


def profiles_behavior_counts(*, project_id: int, since: datetime, cap: int = 50) -> dict[int, int]:
    """How many profilable people have n behavior events since `since`: {n: people}, n capped at `cap`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT least(n, %s), count(*) FROM (SELECT e.profile_id, count(*) AS n FROM personalization_event e"
            f" WHERE e.project_id = %s AND e.ts >= %s AND e.type <> ALL(%s) AND {_EVENT_PROFILABLE}"
            " GROUP BY e.profile_id) AS per_person GROUP BY 1",
            [cap, project_id, since, list(_NOT_BEHAVIOR)],
        )
        return {int(n): int(people) for n, people in cursor.fetchall()}


def profiles_not_profilable(*, project_id: int, profile_ids: Iterable[int]) -> set[int]:
    """Which of these profiles may not be profiled (opted out, consent withdrawn) or no longer exist."""
    wanted = set(profile_ids)
    if not wanted:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.id FROM personalization_profile p WHERE p.project_id = %s AND p.id = ANY(%s) AND {_PROFILABLE}",
            [project_id, list(wanted)],
        )
        allowed = {row[0] for row in cursor.fetchall()}
    return wanted - allowed


def profiles_outcomes(*, project_id: int, since: datetime, goal: str = "purchase") -> dict[int, tuple[int, float]]:
    """profile → (goal events, purchase revenue) since `since`, for profiles with either."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT profile_id, count(*) FILTER (WHERE type = %s),"
            " coalesce(sum(value) FILTER (WHERE type = 'purchase'), 0)::float8"
            " FROM personalization_event WHERE project_id = %s AND ts >= %s AND type IN (%s, 'purchase')"
            " GROUP BY profile_id",
            [goal, project_id, since, goal],
        )
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}


def profiles_converters(*, project_id: int, goal: str, start: datetime, end: datetime) -> dict[int, float]:
    """Profilable profiles with a `goal` event in [start, end): profile → revenue of their purchases then."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.profile_id, coalesce(sum(e.value) FILTER (WHERE e.type = 'purchase'), 0)::float8"
            " FROM personalization_event e WHERE e.project_id = %s AND e.ts >= %s AND e.ts < %s"
            f" AND e.type IN (%s, 'purchase') AND {_EVENT_PROFILABLE}"
            " GROUP BY e.profile_id HAVING count(*) FILTER (WHERE e.type = %s) > 0",
            [project_id, start, end, goal, goal],
        )
        return {row[0]: row[1] for row in cursor.fetchall()}


def profiles_by_external_ids(*, project_id: int, ids: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """User or anonymous ids → profile ids; and the ids no profile has."""
    wanted = list(dict.fromkeys(i for i in ids if i))
    found: dict[str, int] = {}
    rows = ProfileIdentity.objects.filter(project_id=project_id, value__in=wanted).values_list("value", "profile_id")
    for value, profile_id in rows.iterator(chunk_size=5000):
        found.setdefault(value, profile_id)
    return found, [i for i in wanted if i not in found]


def profiles_planted_intent(*, project_id: int, profile_ids: Iterable[int]) -> dict[int, str]:
    """The demo's planted intent per profile: the `planted_intent` attribute, else the old demo column."""
    rows = Profile.objects.filter(project_id=project_id, pk__in=list(profile_ids))
    fields = ["pk", "attributes"] + (["demo_intent"] if hasattr(Profile, "demo_intent") else [])
    out = {}
    for row in rows.values(*fields).iterator(chunk_size=5000):
        intent = (row["attributes"] or {}).get("planted_intent") or row.get("demo_intent") or ""
        if intent:
            out[row["pk"]] = str(intent)
    return out


def profiles_matching_rule(*, project_id: int, attributes: list[dict], events: list[dict], now: datetime) -> list[int]:
    """Profilable profiles meeting every condition.

    attributes: {"attribute", "op": "eq" | "ne" | "in", "value" | "values"};
    events: {"type", "op": ">=" | "<=" | "=", "count", "days"} (events of that type in the last `days`).
    """
    operators = {">=": ">=", "<=": "<=", "=": "="}  # whitelisted: the operator is the one piece not a parameter
    # Each event condition is one grouped count over the project's events of that type in the window
    # (the (project, type, ts) index), joined to the profiles: a plan that cannot turn into a count per
    # profile, as a correlated subquery did when the planner misjudged a freshly loaded table.
    counts, joins, count_params = [], [], []
    for n, cond in enumerate(events):
        counts.append(
            f"c{n} AS (SELECT e.profile_id, count(*) AS n FROM personalization_event e WHERE e.project_id = %s"
            " AND e.type = %s AND e.ts >= %s::timestamptz - %s * interval '1 day' GROUP BY e.profile_id)"
        )
        count_params += [project_id, cond["type"], now, int(cond["days"])]
        joins.append(f"LEFT JOIN c{n} ON c{n}.profile_id = p.id")
    where, params = [f"p.project_id = %s AND {_PROFILABLE}"], [project_id]
    for cond in attributes:
        if cond["op"] == "in":
            where.append("p.attributes ->> %s = ANY(%s)")
            params += [cond["attribute"], [str(v) for v in cond["values"]]]
        else:
            where.append(f"coalesce(p.attributes ->> %s, '') {'=' if cond['op'] == 'eq' else '<>'} %s")
            params += [cond["attribute"], str(cond["value"])]
    for n, cond in enumerate(events):
        where.append(f"coalesce(c{n}.n, 0) {operators[cond['op']]} %s")
        params.append(int(cond["count"]))
    with_counts = f"WITH {', '.join(counts)} " if counts else ""
    sql = f"{with_counts}SELECT p.id FROM personalization_profile p {' '.join(joins)} WHERE {' AND '.join(where)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, count_params + params)
        return [row[0] for row in cursor.fetchall()]


def projects_ids() -> list[int]:
    return list(Project.objects.order_by("pk").values_list("pk", flat=True))


def experiences_by_run(*, project_id: int) -> dict[int, list]:
    """Clustering run id → the experiences (not completed) whose targeting or per-segment bandit uses
    it, so the Segments page can say which experiences a run still serves."""
    out: dict[int, list] = {}
    rows = Experience.objects.filter(project_id=project_id).exclude(
        status__in=[ExperienceStatus.COMPLETED, ExperienceStatus.EXTERNAL]
    )
    for experience in rows.only("key", "name", "status", "targeting", "policy", "segment_attribute").order_by("key"):
        for run_id in experience_segment_use(experience=experience).runs:
            out.setdefault(run_id, []).append(experience)
    return out


def profiles_for_project(*, project_id: int):
    return Profile.objects.filter(project_id=project_id).order_by("-last_seen")


def profile_events(*, project_id: int, profile_id: int):
    return Event.objects.filter(project_id=project_id, profile_id=profile_id).order_by("-ts")


def profile_attribute_names(*, project_id: int, sample: int = 2000) -> list[str]:
    """Attribute names found on the project's newest `sample` profiles, sorted."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT k FROM (SELECT jsonb_object_keys(attributes) AS k FROM personalization_profile"
            " WHERE project_id = %s ORDER BY id DESC LIMIT %s) s ORDER BY k",
            [project_id, sample],
        )
        return [row[0] for row in cursor.fetchall()]


def unit_events_recent(*, project_id: int, unit_id: str, limit: int = 50) -> list[Event]:
    """The newest stored events of the profile a user or anonymous id belongs to (the visitor
    timeline). Empty when PostgreSQL has no such id yet (its events may still be in the stream)."""
    profile_ids = ProfileIdentity.objects.filter(project_id=project_id, value=unit_id).values("profile_id")
    events = Event.objects.filter(project_id=project_id, profile_id__in=profile_ids).order_by("-ts", "-id")
    return list(events.only("type", "ts", "session_id", "value", "properties")[:limit])


def events_properties_recent(*, project_id: int, limit: int = 20_000) -> list[dict]:
    """The properties of the project's newest `limit` behavior events of profilable people, newest
    first: where an editor finds the real words people use (intent preview)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.properties FROM personalization_event e"
            f" WHERE e.project_id = %s AND e.type <> ALL(%s) AND {_EVENT_PROFILABLE} ORDER BY e.ts DESC LIMIT %s",
            [project_id, list(_NOT_BEHAVIOR), limit],
        )
        return [orjson.loads(row[0]) if isinstance(row[0], str) else row[0] for row in cursor.fetchall()]
