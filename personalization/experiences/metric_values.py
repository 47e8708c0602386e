"""Metric values kept on each exposure, so a multi-metric lift report reads the exposures once instead
of scanning the exposed people's events (issue 20: 5 metrics x 20 segments within 3x the
single-metric report).

Each exposure's `metric_values` (float8[]) holds, for every metric of its project that has a slot
(experiments assigns them: hooks.metric_definitions), the per-exposure aggregates the report's scan
computes (metric_cells._metric_columns: counts, sums, seconds to the first event, distinct sessions,
over the metric's windows after and before exposure) at positions metric_cells.stored_position.
They are computed by the very SQL of the scan (metric_cells._per_person, grouped by exposure), so the
figures cannot drift from the reference.

Kept up to date in three places:
- the drain's transaction (metric_values_events_add): the exposures whose windows the batch's
  inserted events fall in are recomputed from their person's stored events. Recomputing rather than
  adding counts each stored event exactly once whatever happened before (a batch drained again, a
  distinct session already counted, a first time that moves earlier), and only events the batch
  inserted can make an exposure dirty;
- new exposures (metric_values_exposures_fill), like the drain's outcome backfill;
- a metric created or edited (experiments' backfill job, metric_values_fill_chunk), chunk by chunk.
Every writer holds the exposed people's profile rows locked (FOR NO KEY UPDATE, id order) while it
computes, as the drain does, so a recomputation never misses events another writer is committing.
"""

from django.db import connection

from personalization import hooks
from personalization.experiences.metric_cells import (
    _NONE,
    NO_FIRST,
    PRE_DAYS,
    SLOT_WIDTH,
    _metric_columns,
    _per_person,
    _reach_days,
    stored_position,
)
from personalization.people.profiles import id_array


def _metrics(project_id: int) -> list[dict]:
    """The project's metrics with a slot, from the experiments app (none without it)."""
    provider = hooks.metric_definitions.get()
    metrics = provider(project_id=project_id) if provider else []
    return [m for m in metrics if m.get("values_slot") is not None]


def _stored_none(part: str) -> str:
    """What a position holds for an aggregate over no events (never NULL: metric_cells.NO_FIRST)."""
    return NO_FIRST if part == "first" else _NONE[part]


def _parts(metric: dict) -> list[str]:
    """The parts (count, sum, first, sessions) of a metric's kept aggregates, in slot order."""
    aggregates: list[tuple[str, str]] = []
    _metric_columns(0, {**metric, "values_ready": False}, aggregates, {})
    return [part for part, _ in aggregates]


def _refresh_sql(metrics: list[dict], *, reset: bool, kept: list[dict] | None = None) -> tuple[list[str], dict]:
    """(UPDATEs of the exposures named by %(ids)s, their parameters): every metric's slot set to the
    aggregates the report's scan computes. Exposures without events in reach get no row from the
    aggregate: `reset` first empties their slots (to what the aggregate is over no events), for a
    backfill over slots that may hold an old definition's values; the drain's exposures all have an
    event in reach, and new ones have no values yet (NULL reads as none).

    The whole array is written, up to the last slot of the project's kept metrics (`kept`, which
    includes `metrics`): the positions refreshed, the others as they were (what a NULL there meant,
    written out), the unused ones 0. So a written array holds no NULL (metric_cells.NO_FIRST)."""
    everyone = [*(kept or []), *metrics]
    nones = {  # position -> its value over no events, for every kept metric's aggregates
        stored_position(metric["values_slot"], k): _stored_none(part)
        for metric in everyone
        for k, part in enumerate(_parts(metric))
    }
    last = max(stored_position(metric["values_slot"], SLOT_WIDTH - 1) for metric in everyone)
    aggregates: list[tuple[str, str]] = []
    params: dict = {}
    fresh: dict[int, str] = {}  # position -> its new value over v
    for metric in metrics:
        start = len(aggregates)
        # As the scan would compute it: forced off the kept values.
        _metric_columns(0, {**metric, "values_ready": False}, aggregates, params)
        for k, i in enumerate(range(start, len(aggregates))):
            position = stored_position(metric["values_slot"], k)
            fresh[position] = f"coalesce(v.a{i}, {nones[position]})"

    def array(new: dict[int, str]) -> str:
        """The whole array: `new` where given, a kept position as it was (NULL as its none), else 0."""
        items = [
            new.get(k) or (f"coalesce(t.metric_values[{k}], {nones[k]})" if k in nones else "0")
            for k in range(1, last + 1)
        ]
        return f"ARRAY[{', '.join(items)}]::float8[]"

    reach = max(_reach_days(m) for m in metrics)
    source = (
        "(SELECT id, profile_id, exposed_at, goal FROM personalization_exposure"
        " WHERE project_id = %(project)s AND id = ANY(%(ids)s::bigint[])) x"
    )
    mine = "t.project_id = %(project)s AND t.id = ANY(%(ids)s::bigint[])"
    statements = (
        [f"UPDATE personalization_exposure t SET metric_values = {array({k: nones[k] for k in fresh})} WHERE {mine}"]
        if reset
        else []
    )
    statements.append(
        f"UPDATE personalization_exposure t SET metric_values = {array(fresh)}"
        f" FROM ({_per_person(aggregates, source, reach, per_exposure=True)}) v"
        # Not the ids again: an index probe per row of v that carries the whole array is quadratic.
        " WHERE t.project_id = %(project)s AND t.id = v.k AND t.exposed_at = v.at"
    )
    return statements, params


# Index probes, never a hash of the events or the exposures: the exposures refreshed are a few of
# millions, each with a handful of events (without this the planner hashed every exposure of the
# project for 5,000 of them: 140 s instead of under a second). Set for these statements only.
_PROBE_SETTINGS = ("enable_hashjoin", "enable_mergejoin")


def _refresh(
    cursor,
    *,
    project_id: int,
    exposures: list[tuple[int, object]],
    metrics: list[dict],
    reset=False,
    kept: list[dict] | None = None,
) -> None:
    """Recompute `metrics` on `exposures` ((id, exposed_at) rows) from their people's stored events.
    `kept`: every kept metric of the project (read when not given), whose positions the array keeps."""
    if not exposures or not metrics:
        return
    statements, params = _refresh_sql(metrics, reset=reset, kept=_metrics(project_id) if kept is None else kept)
    params.update(project=project_id, ids=id_array([row[0] for row in exposures]))
    for name in _PROBE_SETTINGS:
        cursor.execute("SELECT set_config(%s, 'off', true)", [name])
    try:
        for statement in statements:
            cursor.execute(statement, params)
    finally:
        for name in _PROBE_SETTINGS:  # back to what they were: the drain's transaction goes on
            cursor.execute(f"SET LOCAL {name} TO DEFAULT")


def metric_values_events_add(cursor, *, project_id: int, inserted: list[tuple]) -> None:
    """In the drain's transaction, with the batch's people locked: the exposures of the people of the
    rows this batch inserted (the drain's event rows: project, profile, event_id, type, ts, ...)
    whose metric windows an inserted event falls in, recomputed."""
    if not inserted:
        return
    metrics = _metrics(project_id)
    if not metrics:
        return
    reach = max(_reach_days(m) for m in metrics)
    cursor.execute(
        "SELECT DISTINCT x.id, x.exposed_at FROM personalization_exposure x"
        " JOIN unnest(%s::bigint[], %s::timestamptz[]) AS i(profile_id, ts) ON i.profile_id = x.profile_id"
        f" WHERE x.project_id = %s AND i.ts >= x.exposed_at - interval '{PRE_DAYS} days'"
        f" AND i.ts < x.exposed_at + interval '{reach} days'",
        [[row[1] for row in inserted], [row[4] for row in inserted], project_id],
    )
    _refresh(cursor, project_id=project_id, exposures=cursor.fetchall(), metrics=metrics, kept=metrics)


def _refresh_those(cursor, *, project_id: int, column: str, ids: list[int], reset: bool = False) -> None:
    """Every kept metric of the project's exposures whose `column` (id, profile_id) is one of `ids`."""
    metrics = _metrics(project_id)
    if not metrics or not ids:
        return
    cursor.execute(
        f"SELECT id, exposed_at FROM personalization_exposure WHERE project_id = %s AND {column} = ANY(%s::bigint[])",
        [project_id, id_array(ids)],
    )
    _refresh(cursor, project_id=project_id, exposures=cursor.fetchall(), metrics=metrics, reset=reset, kept=metrics)


def metric_values_exposures_fill(cursor, *, project_id: int, exposure_ids: list[int]) -> None:
    """New exposures (the drain's, after their events): every kept metric from the stored events."""
    _refresh_those(cursor, project_id=project_id, column="id", ids=exposure_ids)


def metric_values_fill_chunk(
    cursor, *, project_id: int, metrics: list[dict], after_id: int, limit: int
) -> tuple[int, int]:
    """One chunk of a backfill of `metrics`: the project's next `limit` exposures by id after `after_id`,
    their people locked as the drain locks them, recomputed. Returns (last id, exposures done)."""
    cursor.execute(
        "SELECT id, exposed_at, profile_id FROM personalization_exposure WHERE project_id = %s AND id > %s"
        " ORDER BY id LIMIT %s",
        [project_id, after_id, limit],
    )
    rows = cursor.fetchall()
    if not rows:
        return after_id, 0
    cursor.execute(
        "SELECT 1 FROM personalization_profile WHERE id = ANY(%s::bigint[]) ORDER BY id FOR NO KEY UPDATE",
        [id_array(sorted({row[2] for row in rows}))],
    )
    _refresh(cursor, project_id=project_id, exposures=[row[:2] for row in rows], metrics=metrics, reset=True)
    return rows[-1][0], len(rows)


def metric_values_profiles_refresh(cursor, *, project_id: int, profile_ids: list[int]) -> None:
    """Every kept metric of these people's exposures (a merge moved events and exposures between them)."""
    _refresh_those(cursor, project_id=project_id, column="profile_id", ids=profile_ids, reset=True)


def exposure_metric_values_fill(*, project_id: int, metrics: list[dict], after_id: int, limit: int) -> tuple[int, int]:
    """metric_values_fill_chunk in the caller's transaction (experiments' backfill job)."""
    with connection.cursor() as cursor:
        return metric_values_fill_chunk(cursor, project_id=project_id, metrics=metrics, after_id=after_id, limit=limit)


def exposures_count(*, project_id: int) -> int:
    """How many exposures a project has (a backfill's progress is measured against it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM personalization_exposure WHERE project_id = %s", [project_id])
        return cursor.fetchone()[0]
