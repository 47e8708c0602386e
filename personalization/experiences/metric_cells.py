"""The one scan of a multi-metric lift report: per (segment, UTC day, treated), the moments of every
metric asked for, from exposures joined to the events around them.

The experiments app defines metrics (experiments.models.Metric.spec gives plain dicts); this module
turns them into SQL because only this app names its tables. Per exposure, one lateral index scan of
the person's events (event_profile_ts) from PRE_DAYS before exposure to the end of the longest
window computes every metric's per-person columns at once; the outer GROUP BY then sums them and
their pairwise products (experiments.metrics_stats.Moments). A metric's columns are
[value, pre-exposure value] (mean metrics) or [numerator, denominator, pre numerator, pre
denominator] (ratios); the pre-exposure values are the CUPED covariates.

The same scan also carries the exposure's own outcomes (OUTCOMES: converted, revenue and the
pre_activity covariate the drain keeps), so a lift report reads the exposures once for its
conversion and revenue figures and every metric. Parts a report does not need are left out of the
SQL: without event metrics there is no lateral join, without a capped metric no materialized pass,
and the query is the plain parallel GROUP BY of the exposures.
"""

from django.db import connection

from personalization.experiences.exposures import _EXPOSURE_DAY, cells_source

# The pre-exposure period of every metric's CUPED covariate (the same 14 days as pre_activity).
PRE_DAYS = 14
_POST = "e.ts >= x.exposed_at AND e.ts < x.exposed_at + make_interval(days => {days})"
_PRE = f"e.ts >= x.exposed_at - interval '{PRE_DAYS} days' AND e.ts < x.exposed_at"


def _types(types: list[str], empty: str, params: dict) -> str:
    """The event-type test of a metric: its types (a named parameter), or `empty` (SQL) when it names none."""
    if not types:
        return empty
    name = f"t{len(params)}"
    params[name] = list(types)
    return f"e.type = ANY(%({name})s)"


def _part(part: str, where: str) -> str:
    if part == "sum":
        return f"coalesce(sum(e.value::float8) FILTER (WHERE {where}), 0)"
    if part == "sessions":
        return f"count(DISTINCT nullif(e.session_id, '')) FILTER (WHERE {where})"
    return f"count(*) FILTER (WHERE {where})"


def _metric_columns(index: int, metric: dict, lateral: list[str], lateral_params: dict) -> tuple[list[str], str]:
    """(per-person SQL of the metric's columns over x and the lateral row ev, eligibility SQL); adds
    the lateral aggregates it needs to `lateral`. Window lengths are validated integers."""
    kind, window = metric["kind"], int(metric["window_days"])
    post = _POST.format(days=window)

    def agg(sql: str) -> str:
        lateral.append(f"{sql} AS m{index}_{len(lateral)}")
        return f"ev.m{index}_{len(lateral) - 1}"

    if kind == "ratio":
        columns = []
        for when in (post, _PRE):
            for part in ("numerator", "denominator"):
                test = _types(metric[f"{part}_event_types"], "true", lateral_params)
                columns.append(agg(_part(metric[f"{part}_part"], f"{test} AND {when}")))
        return columns, "true"
    if kind == "conversion" and not metric["event_types"]:
        # The experience's goal in its attribution window: what the drain keeps on the exposure.
        pre = agg(f"count(*) FILTER (WHERE e.type = x.goal AND {_PRE})")
        return ["x.converted::int", f"({pre} > 0)::int"], "true"
    empty = {"revenue": "e.value IS NOT NULL", "conversion": "e.type = x.goal", "time_to_conversion": "e.type = x.goal"}
    test = _types(metric["event_types"], empty.get(kind, "true"), lateral_params)
    if kind == "conversion":
        post_count = agg(f"count(*) FILTER (WHERE {test} AND {post})")
        pre_count = agg(f"count(*) FILTER (WHERE {test} AND {_PRE})")
        return [f"({post_count} > 0)::int", f"({pre_count} > 0)::int"], "true"
    if kind == "revenue":
        return [agg(_part("sum", f"{test} AND {post}")), agg(_part("sum", f"{test} AND {_PRE}"))], "true"
    if kind == "count":
        return [agg(_part("count", f"{test} AND {post}")), agg(_part("count", f"{test} AND {_PRE}"))], "true"
    if kind == "retention":
        first, last = int(metric["return_from_day"]), int(metric["return_to_day"])
        returned = agg(
            f"count(*) FILTER (WHERE {test} AND e.ts >= x.exposed_at + make_interval(days => {first})"
            f" AND e.ts < x.exposed_at + make_interval(days => {last + 1}))"
        )
        pre = agg(f"count(*) FILTER (WHERE {test} AND {_PRE})")
        # Only people whose window has closed (experiments.retention): the as-of time is the last parameter.
        eligible = f"x.exposed_at <= %(as_of)s - make_interval(days => {last + 1})"
        return [f"({returned} > 0)::int", f"({pre} > 0)::int"], eligible
    if kind == "time_to_conversion":
        # Hours to the first conversion, capped at the window (a restricted mean: people who did not
        # convert count the whole window), among people whose window has closed.
        first = agg(f"min(e.ts) FILTER (WHERE {test} AND {post})")
        pre = agg(f"count(*) FILTER (WHERE {test} AND {_PRE})")
        hours = f"coalesce(least(date_part('epoch', {first} - x.exposed_at) / 3600, {window * 24}), {window * 24})"
        return [hours, f"({pre} > 0)::int"], f"x.exposed_at <= %(as_of)s - make_interval(days => {window})"
    raise ValueError(f"unknown metric kind {kind!r}")


# The exposure row's outcomes as a block of columns: what ArmStats needs (n, conversions, Σ revenue,
# Σ revenue², Σ pre, Σ pre², Σ pre·revenue) are its count, sums and products. Every column is summed
# as float8: summing numeric is several times slower, and cents survive float8 exactly far beyond
# any realistic revenue total.
OUTCOMES = ("x.converted::int", "x.revenue", "x.pre_activity")


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
) -> tuple[str, dict, list[int]]:
    """(SQL, parameters, columns per block): rows (segment, day, treated, then per block n, Σ column
    a, and Σ column a x column b for a <= b). The blocks are OUTCOMES first when `outcomes`, then one
    per metric. Capped metrics (winsorize_percentile) cap each column at that percentile of every
    exposed person's value (percentile_cont, zeros included)."""
    if not metrics and not outcomes:
        raise ValueError("metrics must name at least one metric, or outcomes be asked for")
    (join, join_params, expr, expr_params), (source, params, treated, treated_params) = cells_source(
        project_id=project_id,
        experience_key=experience_key,
        comparison=comparison,
        control_key=control_key,
        start=start,
        end=end,
        breakdown_kind=breakdown_kind,
        breakdown_name=breakdown_name,
        also="goal",
    )
    lateral: list[str] = []
    lateral_params: dict = {}
    blocks = [(list(OUTCOMES), "true", None)] if outcomes else []
    for index, metric in enumerate(metrics, start=len(blocks)):
        blocks.append((*_metric_columns(index, metric, lateral, lateral_params), metric.get("winsorize_percentile")))
    person, eligibility, widths = [], [], []
    for index, (columns, eligible, _) in enumerate(blocks):
        widths.append(len(columns))
        person += [f"({column})::float8 AS c{index}_{k}" for k, column in enumerate(columns)]
        eligibility.append(f"({eligible}) AS ok{index}")
    caps, sums = [], []
    for index, ((_, _, percentile), width) in enumerate(zip(blocks, widths, strict=True)):
        names = [f"u.c{index}_{k}" for k in range(width)]
        if percentile:
            caps += [
                f"percentile_cont({float(percentile)!r}) WITHIN GROUP (ORDER BY u.c{index}_{k}) AS cap{index}_{k}"
                for k in range(width)
            ]
            names = [f"least({name}, caps.cap{index}_{k})" for k, name in enumerate(names)]
        only = f"FILTER (WHERE u.ok{index})"
        sums.append(f"count(*) {only}")
        sums += [f"coalesce(sum({name}) {only}, 0)" for name in names]
        sums += [f"coalesce(sum({names[a]} * {names[b]}) {only}, 0)" for a in range(width) for b in range(a, width)]
    # Named parameters: the as-of time and the event types are used in several places of the text.
    numbered = [*expr_params, *treated_params, *params, *join_params]
    positional = iter(range(len(numbered)))
    events = ""
    if lateral:
        reach = max(_reach_days(m) for m in metrics)
        events = (
            f" LEFT JOIN LATERAL (SELECT {', '.join(lateral)} FROM personalization_event e"
            f" WHERE e.profile_id = x.profile_id AND e.ts >= x.exposed_at - interval '{PRE_DAYS} days'"
            f" AND e.ts < x.exposed_at + make_interval(days => {reach})) ev ON true"
        )
    rows = (
        f"SELECT {expr} AS seg, {_EXPOSURE_DAY} AS day, {treated} AS treated,"
        f" {', '.join(person)}, {', '.join(eligibility)} FROM {source} {join}{events}"
    )
    grouped = f"SELECT u.seg, u.day, u.treated, {', '.join(sums)} FROM"
    if caps:
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
    return named, values, widths


def exposure_metric_cells(**kwargs) -> tuple[list[tuple], list[int]]:
    """(rows, columns per metric) of exposure_metric_cells_sql, from ONE scan of the exposures."""
    sql, params, widths = exposure_metric_cells_sql(**kwargs)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall(), widths


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
