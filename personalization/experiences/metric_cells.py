"""The one scan of a multi-metric lift report: per (segment, UTC day, treated), the moments of every
metric asked for, from exposures joined to the events around them.

The experiments app defines metrics (experiments.models.Metric.spec gives plain dicts); this module
turns them into SQL because only this app names its tables. The population is hash-joined to the
events in its time range (PRE_DAYS before exposure to the end of the longest window) and grouped by
person (_per_person), which computes every metric's per-person columns at once; the outer GROUP BY
then sums them and their pairwise products (experiments.metrics_stats.Moments). A metric's columns
are [value, pre-exposure value] (mean metrics) or [numerator, denominator, pre numerator, pre
denominator] (ratios); the pre-exposure values are the CUPED covariates.

The same scan also carries the exposure's own outcomes (OUTCOMES: converted, revenue and the
pre_activity covariate the drain keeps), so a lift report reads the exposures once for its
conversion and revenue figures and every metric (the per-person pass reads the population a second
time, narrowly: person, exposure time, goal). Parts a report does not need are left out of the SQL:
without event metrics there is no join to the events, without a capped metric no materialized pass,
and the query is the plain parallel GROUP BY of the exposures.
"""

from django.db import connection, transaction

from personalization.experiences.exposures import _EXPOSURE_DAY, cells_source

# The pre-exposure period of every metric's CUPED covariate (the same 14 days as pre_activity).
PRE_DAYS = 14
# Conditions over an event row of _per_person: e.d is the time from exposure to the event. Comparing
# it with constant intervals (a day is 24 hours) costs a fraction of adding an interval to the
# exposure time for every event and every condition (a calendar computation each time).
_POST = "e.d >= interval '0' AND e.d < interval '{days} days'"
_PRE = f"e.d >= interval '-{PRE_DAYS} days' AND e.d < interval '0'"


# Positions of a metric's kept aggregates in the exposure's metric_values (1-based, as SQL arrays are):
# slot s holds up to SLOT_WIDTH of them (a ratio has four: numerator and denominator, after and before).
SLOT_WIDTH = 4


def stored_position(slot: int, k: int) -> int:
    return int(slot) * SLOT_WIDTH + k + 1


def kept(metric: dict) -> bool:
    """Whether the report reads this metric's values from the exposures (complete for its definition)."""
    return bool(metric.get("values_ready")) and metric.get("values_slot") is not None


def _types(types: list[str], empty: str, params: dict) -> str:
    """The event-type test of a metric: its types (a named parameter), or `empty` (SQL) when it names none."""
    if not types:
        return empty
    name = f"t{len(params)}"
    params[name] = list(types)
    return f"e.type = ANY(%({name})s)"


# CUPAC's covariate for each kind of metric: the predictive score decide recorded at exposure that
# forecasts it (personalization.score_fields), 0 for an exposure that recorded none. Any value fixed
# before the variant was shown is a valid covariate; missing ones only make it a weaker one.
PREDICTED_BY = {
    "conversion": "likely_to_buy",
    "time_to_conversion": "likely_to_buy",
    "count": "likely_to_buy",
    "ratio": "likely_to_buy",
    "revenue": "expected_revenue",
    "retention": "lapse_risk",
}


def predicted_column(kind: str) -> str:
    """SQL of a metric's CUPAC covariate over the exposure row x (the score names are constants)."""
    return f"coalesce((x.live -> 'scores' ->> '{PREDICTED_BY[kind]}')::float8, 0)"


def _metric_columns(
    index: int, metric: dict, aggregates: list[tuple[str, str]], lateral_params: dict
) -> tuple[list[str], str]:
    """(per-person SQL of the metric's columns over x and the per-person row ev, eligibility SQL);
    adds the (part, condition) aggregates over the person's events it needs to `aggregates`
    (_per_person renders them). Window lengths are validated integers.

    A metric whose values the drain keeps (metric_values: "values_ready" and its "values_slot")
    reads its aggregates from the exposure row instead, in the same order: the same columns, no
    events."""
    kind, window = metric["kind"], int(metric["window_days"])
    post = _POST.format(days=window)
    stored = [0] if kept(metric) else None

    def agg(part: str, where: str) -> str:
        if stored is not None:
            position = stored_position(metric["values_slot"], stored[0])
            stored[0] += 1
            if part == "first":  # stored as NO_FIRST when there was no such event (NULL: not written yet)
                return f"nullif(x.metric_values[{position}], {NO_FIRST})"
            return f"coalesce(x.metric_values[{position}], {_NONE[part]})"
        aggregates.append((part, where))
        # A person without events in reach has no ev row: what the aggregate is over no events.
        return f"coalesce(ev.a{len(aggregates) - 1}, {_NONE[part]})"

    if kind == "ratio":
        columns = []
        for when in (post, _PRE):
            for part in ("numerator", "denominator"):
                test = _types(metric[f"{part}_event_types"], "true", lateral_params)
                columns.append(agg(metric[f"{part}_part"], f"{test} AND {when}"))
        return columns, "true"
    if kind == "conversion" and not metric["event_types"]:
        # The experience's goal in its attribution window: what the drain keeps on the exposure.
        pre = agg("count", f"e.type = e.goal AND {_PRE}")
        return ["x.converted::int", f"({pre} > 0)::int"], "true"
    empty = {"revenue": "e.value IS NOT NULL", "conversion": "e.type = e.goal", "time_to_conversion": "e.type = e.goal"}
    test = _types(metric["event_types"], empty.get(kind, "true"), lateral_params)
    if kind == "conversion":
        post_count = agg("count", f"{test} AND {post}")
        pre_count = agg("count", f"{test} AND {_PRE}")
        return [f"({post_count} > 0)::int", f"({pre_count} > 0)::int"], "true"
    if kind == "revenue":
        return [agg("sum", f"{test} AND {post}"), agg("sum", f"{test} AND {_PRE}")], "true"
    if kind == "count":
        return [agg("count", f"{test} AND {post}"), agg("count", f"{test} AND {_PRE}")], "true"
    if kind == "retention":
        first, last = int(metric["return_from_day"]), int(metric["return_to_day"])
        returned = agg(
            "count",
            f"{test} AND e.d >= interval '{first} days' AND e.d < interval '{last + 1} days'",
        )
        pre = agg("count", f"{test} AND {_PRE}")
        # Only people whose window has closed (experiments.retention): the as-of time is the last parameter.
        eligible = f"x.exposed_at <= %(as_of)s - make_interval(days => {last + 1})"
        return [f"({returned} > 0)::int", f"({pre} > 0)::int"], eligible
    if kind == "time_to_conversion":
        # Hours to the first conversion, capped at the window (a restricted mean: people who did not
        # convert count the whole window), among people whose window has closed.
        first = agg("first", f"{test} AND {post}")
        pre = agg("count", f"{test} AND {_PRE}")
        hours = f"coalesce(least({first} / 3600, {window * 24}), {window * 24})"
        return [hours, f"({pre} > 0)::int"], f"x.exposed_at <= %(as_of)s - make_interval(days => {window})"
    raise ValueError(f"unknown metric kind {kind!r}")


# The exposure row's outcomes as a block of columns: what ArmStats needs (n, conversions, Σ revenue,
# Σ revenue², Σ pre, Σ pre², Σ pre·revenue) are its count, sums and products. Every column is summed
# as float8: summing numeric is several times slower, and cents survive float8 exactly far beyond
# any realistic revenue total.
OUTCOMES = ("x.converted::int", "x.revenue", "x.pre_activity")


# What an aggregate of _per_person is over none of a person's events.
_NONE = {"count": "0", "sessions": "0", "sum": "0", "first": "NULL"}
# How metric_values stores "no such event" for a first time (no time from exposure is negative): the kept
# arrays hold no NULL, since a subscript of an array with NULLs walks every position before it, and the
# five-metric report reads each position once per sum and product it appears in (bench/lift.py).
NO_FIRST = "-1"


def _per_person(aggregates: list[tuple[str, str]], source: str, reach: int, *, per_exposure: bool = False) -> str:
    """SQL of one row per person with events in reach (ev: k, the person, then a0, a1, ...), each aN
    the aggregate (count, sum of value, seconds from exposure to the first, distinct sessions) of the
    events meeting its condition. `per_exposure` (the kept values, metric_values): one row per
    exposure with events in reach (k its id, at its time), each exposure's events found by an index
    probe of its own time range (a few exposures among millions: no scan of the events).

    One hash join of the population to the events in its time range, grouped by person, instead of
    an index probe of each person's events (13.6 s of 20 s per 1M exposures, bench/lift.py): every
    population has one exposure per person, so the person is the exposure. Distinct sessions would
    force a sort of every joined row (a DISTINCT aggregate cannot be hashed), so with a sessions part
    the events are first grouped per person and session: a session counts when any of its events
    meets the condition, and counts, sums and first times add up over sessions."""
    keys = "k, at" if per_exposure else "k"
    if per_exposure:
        # Each exposure probes its person's events in its own time range (event_profile_ts). OFFSET 0
        # keeps the subquery from being flattened into a join the planner may turn around: with no
        # statistics yet (a table just loaded) it drove the exposures from the events, 22 s a chunk.
        events = (
            " CROSS JOIN LATERAL (SELECT e.type, e.value, e.session_id, e.ts FROM personalization_event e"
            " WHERE e.profile_id = x.profile_id AND e.project_id = %(project)s"
            f" AND e.ts >= x.exposed_at - interval '{PRE_DAYS} days' AND e.ts < x.exposed_at + interval '{reach} days'"
            " OFFSET 0) e"
        )
    else:
        events = (
            " JOIN personalization_event e ON e.profile_id = x.profile_id"
            # The population's own time range bounds the events too: month partitions and ts indexes prune.
            f" WHERE e.project_id = %(project)s AND e.ts >= %(events_from)s::timestamptz - interval '{PRE_DAYS} days'"
            f" AND e.ts < %(events_to)s::timestamptz + interval '{reach} days'"
        )
    joined = (
        f" FROM (SELECT {'x.id AS k, x.exposed_at AS at' if per_exposure else 'x.profile_id AS k'}, x.goal, e.type,"
        f" e.value, e.session_id, e.ts - x.exposed_at AS d FROM {source}{events}) e"
        f" WHERE e.d >= interval '-{PRE_DAYS} days' AND e.d < interval '{reach} days'"
    )
    one = {
        "count": "count(*) FILTER (WHERE {})",
        "sum": "sum(e.value::float8) FILTER (WHERE {})",
        "first": "date_part('epoch', min(e.d) FILTER (WHERE {}))",
    }
    if not any(part == "sessions" for part, _ in aggregates):
        columns = ", ".join(f"{one[part].format(where)} AS a{i}" for i, (part, where) in enumerate(aggregates))
        listed = ", ".join(f"e.{k}" for k in keys.split(", "))
        return f"SELECT {listed}, {columns}{joined} GROUP BY {listed}"
    inner = {
        **one,
        "count": "(count(*) FILTER (WHERE {}))::int",
        "first": "min(e.d) FILTER (WHERE {})",
        "sessions": "bool_or({})",
    }
    outer = {
        "count": "sum(s.a{i})",
        "sum": "sum(s.a{i})",
        "first": "date_part('epoch', min(s.a{i}))",
        "sessions": "count(*) FILTER (WHERE s.a{i} AND s.session_id <> '')",
    }
    per_session = ", ".join(f"{inner[part].format(where)} AS a{i}" for i, (part, where) in enumerate(aggregates))
    columns = ", ".join(f"{outer[part].format(i=i)} AS a{i}" for i, (part, _) in enumerate(aggregates))
    inner_keys = ", ".join(f"e.{k}" for k in keys.split(", "))
    outer_keys = ", ".join(f"s.{k}" for k in keys.split(", "))
    return (
        f"SELECT {outer_keys}, {columns} FROM (SELECT {inner_keys}, e.session_id, {per_session}{joined}"
        f" GROUP BY {inner_keys}, e.session_id) s GROUP BY {outer_keys}"
    )


def _reach_days(metric: dict) -> int:
    return int(metric["return_to_day"]) + 1 if metric["kind"] == "retention" else int(metric["window_days"])


def exposure_metric_cells_sql(
    *,
    project_id: int,
    experience_key: str,
    comparison: str,
    start,
    end,
    metrics: list[dict],
    as_of,
    control_key: str = "",
    breakdown_kind: str = "exposure",
    breakdown_name: str = "segment",
    outcomes: bool = False,
    cap_values: dict | None = None,
    caps_only: bool = False,
    predicted: bool = False,
) -> tuple[str, dict, list]:
    """(SQL, parameters, columns per block): rows (segment, day, treated, then per block n, Σ column
    a, and Σ column a x column b for a <= b). The blocks are OUTCOMES first when `outcomes`, then one
    per metric. Capped metrics (winsorize_percentile) cap each column at that percentile of every
    exposed person's value (percentile_cont, zeros included): computed in the same query, or given
    as `cap_values` (by name, as the `caps_only` query returns them: SQL, parameters, names).
    `predicted`: each metric block ends with one more column, its CUPAC covariate (predicted_column;
    never capped)."""
    if not metrics and not outcomes:
        raise ValueError("metrics must name at least one metric, or outcomes be asked for")
    also = "goal, metric_values" if any(kept(m) for m in metrics) else "goal"
    (join, join_params, expr, expr_params), (source, params, treated, treated_params) = cells_source(
        project_id=project_id,
        experience_key=experience_key,
        comparison=comparison,
        control_key=control_key,
        start=start,
        end=end,
        breakdown_kind=breakdown_kind,
        breakdown_name=breakdown_name,
        also=also + ", live" if predicted else also,
    )
    aggregates: list[tuple[str, str]] = []
    lateral_params: dict = {}
    blocks = [(list(OUTCOMES), "true", None)] if outcomes else []
    for index, metric in enumerate(metrics, start=len(blocks)):
        columns, eligible = _metric_columns(index, metric, aggregates, lateral_params)
        blocks.append((columns, eligible, metric.get("winsorize_percentile")))
    person, eligibility, widths, capped = [], [], [], []
    first_metric = 1 if outcomes else 0
    for index, (columns, eligible, _) in enumerate(blocks):
        capped.append(len(columns))
        if predicted and index >= first_metric:
            columns = [*columns, predicted_column(metrics[index - first_metric]["kind"])]
        widths.append(len(columns))
        person += [f"({column})::float8 AS c{index}_{k}" for k, column in enumerate(columns)]
        eligibility.append(f"({eligible}) AS ok{index}")
    caps, sums = [], []
    for index, ((_, eligible, percentile), width) in enumerate(zip(blocks, widths, strict=True)):
        names = [f"u.c{index}_{k}" for k in range(width)]
        if percentile:
            caps += [
                f"percentile_cont({float(percentile)!r}) WITHIN GROUP (ORDER BY u.c{index}_{k}) AS cap{index}_{k}"
                for k in range(capped[index])
            ]
            cap = "%(cap{}_{})s::float8" if cap_values is not None else "caps.cap{}_{}"
            names = [
                f"least({name}, {cap.format(index, k)})" if k < capped[index] else name for k, name in enumerate(names)
            ]
        # Everyone counts for most blocks: no filter to evaluate for each of their aggregates and rows.
        only = "" if eligible == "true" else f"FILTER (WHERE u.ok{index})"
        sums.append(f"count(*) {only}")
        sums += [f"coalesce(sum({name}) {only}, 0)" for name in names]
        sums += [f"coalesce(sum({names[a]} * {names[b]}) {only}, 0)" for a in range(width) for b in range(a, width)]
    # Named parameters: the as-of time and the event types are used in several places of the text.
    numbered = [*expr_params, *treated_params, *params, *join_params]
    events = ""
    if aggregates:
        reach = max(_reach_days(m) for m in metrics if not kept(m))
        events = f" LEFT JOIN ({_per_person(aggregates, source, reach)}) ev ON ev.k = x.profile_id"
        numbered += params
        lateral_params.update(project=project_id, events_from=start, events_to=end)
    positional = iter(range(len(numbered)))
    rows = (
        f"SELECT {expr} AS seg, {_EXPOSURE_DAY} AS day, {treated} AS treated,"
        f" {', '.join(person)}, {', '.join(eligibility)} FROM {source} {join}{events}"
    )
    grouped = f"SELECT u.seg, u.day, u.treated, {', '.join(sums)} FROM"
    if caps_only:
        # Over the population alone: a breakdown's join neither adds nor drops rows (an exposure's one
        # profile; at most one segment of a run), so the caps are those of the rows above.
        numbered = [*params, *(params if aggregates else [])]
        positional = iter(range(len(numbered)))
        sql = f"SELECT {', '.join(caps)} FROM (SELECT {', '.join(person)} FROM {source}{events}) u"
    elif caps and cap_values is None:
        # The caps are percentiles over every row, so the rows are computed once and read twice; the
        # caps are materialized too, else a nested loop may recompute them for every row (quadratic).
        sql = (
            f"WITH u AS MATERIALIZED ({rows}), caps AS MATERIALIZED (SELECT {', '.join(caps)} FROM u)"
            f" {grouped} u CROSS JOIN caps GROUP BY 1, 2, 3"
        )
    else:  # a subquery PostgreSQL flattens: one parallel GROUP BY over the exposures
        sql = f"{grouped} ({rows}) u GROUP BY 1, 2, 3"
    # Turn the positional %s into named ones, in order, so as_of can be named and reused.
    parts = sql.split("%s")
    named = parts[0] + "".join(f"%(p{next(positional)})s{part}" for part in parts[1:])
    values = {f"p{i}": value for i, value in enumerate(numbered)}
    values.update(lateral_params, as_of=as_of)
    if caps_only:
        return named, values, [cap.rsplit(" AS ", 1)[1] for cap in caps]
    values.update(cap_values or {})
    return named, values, widths


# Planner settings for a report joined to the events, for that one query. Nested loops off: on tables
# whose statistics are stale or empty (a fresh project, the tests) the planner takes the population
# for one row and recomputes the per-person aggregate for every exposure, quadratic (1,500 people ran
# for minutes); hash joins cost little more when the tables are small. More memory per hash: the
# per-person aggregates of 1M exposures take ~250 MB, which at the default 4 MB spill to disk and
# sort instead (bench/lift.py); beyond that PostgreSQL spills in batches rather than failing.
_JOINED_SETTINGS = {"enable_nestloop": "off", "work_mem": "256MB"}


# The caps query sorts each capped column of every exposure: in memory, not in files on disk.
_CAPS_SETTINGS = {"work_mem": "256MB"}


def _fetch(cursor, sql: str, params: dict, settings: dict) -> list[tuple]:
    for name, value in settings.items():
        cursor.execute("SELECT set_config(%s, %s, true)", [name, value])
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    for name in settings:  # back to what they were: the caller's transaction may go on
        cursor.execute(f"SET LOCAL {name} TO DEFAULT")
    return rows


def exposure_metric_cells(**kwargs) -> tuple[list[tuple], list[int]]:
    """(rows, columns per metric) of exposure_metric_cells_sql, from ONE scan of the exposures.

    When every metric is read from the exposures (no events joined) and some are capped, the caps
    come first, from a query of their own, and the cells from the plain parallel GROUP BY with the
    caps as constants: materializing every row to read it twice ran in one process and spilled to
    disk (5 metrics: 18.6 s wall for 5.5 s CPU, bench/lift.py). Joined to the events, the rows are
    worth computing once, so the caps stay in the one query."""
    sql, params, widths = exposure_metric_cells_sql(**kwargs)
    joined = " JOIN personalization_event " in sql
    with transaction.atomic(), connection.cursor() as cursor:
        if not joined and " caps AS MATERIALIZED " in sql:
            caps_sql, caps_params, names = exposure_metric_cells_sql(**kwargs, caps_only=True)
            (found,) = _fetch(cursor, caps_sql, caps_params, _CAPS_SETTINGS)
            sql, params, widths = exposure_metric_cells_sql(**kwargs, cap_values=dict(zip(names, found, strict=True)))
        return _fetch(cursor, sql, params, _JOINED_SETTINGS if joined else {}), widths


def exposure_conversion_times(*, metric: dict, as_of, **population) -> list[tuple[bool, int, int, int]]:
    """(treated, whole hours since exposure, converted, still waiting) per arm and hour: the counts a
    Kaplan-Meier curve of a time-to-conversion metric needs (experiments.survival). `population`:
    project_id, experience_key, comparison, start, end, control_key, as exposure_metric_cells takes them.

    A person who converted within the metric's window counts at the hour of their first conversion;
    one who has not counts as still waiting at the hours watched so far (up to `as_of`, at most the
    window), so people exposed recently count for the time they have had instead of being dropped."""
    window = int(metric["window_days"])
    _, (source, params, treated, treated_params) = cells_source(
        **population, breakdown_kind="exposure", breakdown_name="segment", also="goal"
    )
    types = list(metric["event_types"])
    test = "e.type = ANY(%s)" if types else "e.type = x.goal"
    watched = f"least(date_part('epoch', %s::timestamptz - x.exposed_at), {window * 86400})"
    sql = (
        "SELECT u.treated, u.hours, count(*) FILTER (WHERE u.first IS NOT NULL),"
        " count(*) FILTER (WHERE u.first IS NULL) FROM ("
        f"SELECT {treated} AS treated, ev.first,"
        f" floor(coalesce(date_part('epoch', ev.first - x.exposed_at), {watched}) / 3600)::int AS hours"
        f" FROM {source} LEFT JOIN LATERAL (SELECT min(e.ts) AS first FROM personalization_event e"
        f" WHERE e.profile_id = x.profile_id AND {test} AND e.ts >= x.exposed_at"
        f" AND e.ts < x.exposed_at + make_interval(days => {window}) AND e.ts < %s) ev ON true"
        ") u GROUP BY 1, 2 ORDER BY 1, 2"
    )
    values = [*treated_params, as_of, *params, *([types] if types else []), as_of]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        return [(bool(t), int(h), int(c), int(w)) for t, h, c, w in cursor.fetchall()]
