"""Plotly figures of a lift report (from its JSON form). No Django: figures in, JSON out."""

from html import escape

import plotly.graph_objects as go

from experiments.metric_report import UNITS

GOOD, BAD, NEUTRAL, INK = "#059669", "#dc2626", "#9ca3af", "#111827"
_LAYOUT = {"template": "plotly_white", "margin": {"l": 10, "r": 10, "t": 30, "b": 40}, "font": {"size": 12}}


def _pts(value):
    return None if value is None else value * 100


def segment_name(result: dict, value: str) -> str:
    """The name shown for a segment: the marketer's name of a behavior segment, else the value itself."""
    return (result.get("segment_labels") or {}).get(value, value)


def segment_key(result: dict, value: str) -> str:
    """The key shown under a behavior segment's name ("" for other breakdowns and for the rows of
    people in no segment or not recorded, whose values are in parentheses and no key)."""
    labels = result.get("segment_labels") or {}
    return value if value in labels and not value.startswith("(") else ""


def _tick(result: dict, value: str) -> str:
    """An axis label: the segment's name, with its key in small grey type below. Names are the
    marketer's text, so plotly's tags in them are shown, not obeyed."""
    if not result.get("segment_labels"):
        return value
    key = segment_key(result, value)
    name = escape(segment_name(result, value), quote=False)
    return f"{name}<br><span style='font-size:10px;color:#6b7280'>{escape(key, quote=False)}</span>" if key else name


def waterfall(result: dict, metric: str = "conversion") -> str:
    """Each segment's contribution to the total lift, the mix term, and the total (percentage points)."""
    decomposition = result["report"][f"{metric}_decomposition"]
    scale = _pts if metric == "conversion" else (lambda v: v)
    contributions = sorted(decomposition["contributions"], key=lambda c: -(c["contribution"] or 0))
    names = [_tick(result, c["name"]) for c in contributions] + ["Mix", "Total"]
    values = [scale(c["contribution"]) for c in contributions] + [scale(decomposition["mix"]), None]
    measures = ["relative"] * (len(contributions) + 1) + ["total"]
    fig = go.Figure(
        go.Waterfall(
            orientation="v",
            x=names,
            y=values,
            measure=measures,
            increasing={"marker": {"color": GOOD}},
            decreasing={"marker": {"color": BAD}},
            totals={"marker": {"color": "#4f46e5"}},
            connector={"line": {"color": "#d1d5db"}},
            # Labels set per bar: plotly's %{delta} shows the running total on a bar of exactly 0.
            text=[f"{v:+.2f}" if v is not None else "" for v in values[:-1]]
            + [f"{scale(decomposition['total']):+.2f}"],
            texttemplate="%{text}",
            textposition="outside",
        )
    )
    unit = "points of conversion" if metric == "conversion" else "revenue per user"
    fig.update_layout(**_LAYOUT, height=360, yaxis_title=unit, showlegend=False)
    return fig.to_json()


def forest(result: dict, metric: str = "conversion") -> str:
    """Per-segment lift with its interval; filled markers are significant after correction."""
    report = result["report"]
    rows = [*report["segments"], report["overall"]]
    names, values, low, high, colors, symbols = [], [], [], [], [], []
    for index, row in enumerate(rows):
        estimate = row["conversion"]["absolute_lift"] if metric == "conversion" else row["revenue"]["difference"]
        scale = 100 if metric == "conversion" else 1
        significant = row[f"{metric}_significant"]
        value = estimate["value"]
        names.append("All users" if index == len(rows) - 1 else _tick(result, row["name"]))
        values.append(None if value is None else value * scale)
        low.append(None if estimate["ci_low"] is None or value is None else (value - estimate["ci_low"]) * scale)
        high.append(None if estimate["ci_high"] is None or value is None else (estimate["ci_high"] - value) * scale)
        colors.append(
            INK if index == len(rows) - 1 else (GOOD if significant and value > 0 else BAD if significant else NEUTRAL)
        )
        symbols.append("diamond" if index == len(rows) - 1 else ("circle" if significant else "circle-open"))
    fig = go.Figure(
        go.Scatter(
            x=values,
            y=names,
            mode="markers",
            marker={"color": colors, "symbol": symbols, "size": 11, "line": {"width": 2, "color": colors}},
            error_x={"type": "data", "symmetric": False, "array": high, "arrayminus": low, "color": "#6b7280"},
            hovertemplate="%{y}: %{x:.2f}<extra></extra>",
        )
    )
    fig.add_vline(x=0, line_dash="dot", line_color="#6b7280")
    fig.update_layout(
        **_LAYOUT,
        height=80 + 34 * len(rows),
        showlegend=False,
        xaxis_title="lift, points of conversion" if metric == "conversion" else "lift, revenue per user",
        yaxis={"autorange": "reversed"},
    )
    return fig.to_json()


def over_time(result: dict) -> str:
    """Cumulative lift by day of first exposure, with its confidence band."""
    daily = result["daily"]
    days = [d["day"] for d in daily]
    fig = go.Figure()
    fig.add_scatter(
        x=days,
        y=[_pts(d["ci_high"]) for d in daily],
        mode="lines",
        line={"width": 0},
        showlegend=False,
        hoverinfo="skip",
    )
    fig.add_scatter(
        x=days,
        y=[_pts(d["ci_low"]) for d in daily],
        mode="lines",
        line={"width": 0},
        fill="tonexty",
        fillcolor="rgba(79,70,229,0.15)",
        name="95 % interval",
        hoverinfo="skip",
    )
    fig.add_scatter(
        x=days,
        y=[_pts(d["lift"]) for d in daily],
        mode="lines+markers",
        line={"color": "#4f46e5"},
        name="cumulative lift",
    )
    fig.add_hline(y=0, line_dash="dot", line_color="#6b7280")
    fig.update_layout(**_LAYOUT, height=300, yaxis_title="points of conversion", legend={"orientation": "h", "y": 1.15})
    return fig.to_json()


CSV_HEADER = [
    "segment",
    "users_treatment",
    "users_holdout",
    "conversions_treatment",
    "conversions_holdout",
    "rate_treatment",
    "rate_holdout",
    "absolute_lift",
    "absolute_ci_low",
    "absolute_ci_high",
    "relative_lift",
    "relative_ci_low",
    "relative_ci_high",
    "p_value",
    "q_value",
    "significant",
    "prob_treatment_better",
    "revenue_diff",
    "revenue_ci_low",
    "revenue_ci_high",
    "revenue_p_value",
    "contribution",
    "contribution_ci_low",
    "contribution_ci_high",
    "srm_p_value",
    "segment_key",
]


def table_rows(result: dict) -> list[list]:
    """One row per segment and one for all users, in CSV_HEADER order."""
    report = result["report"]
    contributions = {c["name"]: c for c in report["conversion_decomposition"]["contributions"]}
    rows = []
    for row in [*report["segments"], report["overall"]]:
        conversion, revenue = row["conversion"], row["revenue"]
        part = contributions.get(row["name"], {})
        is_overall = row is report["overall"]
        rows.append(
            [
                "All users" if is_overall else segment_name(result, row["name"]),
                conversion["users_treatment"],
                conversion["users_holdout"],
                conversion["conversions_treatment"],
                conversion["conversions_holdout"],
                conversion["rate_treatment"],
                conversion["rate_holdout"],
                conversion["absolute_lift"]["value"],
                conversion["absolute_lift"]["ci_low"],
                conversion["absolute_lift"]["ci_high"],
                conversion["relative_lift"]["value"],
                conversion["relative_lift"]["ci_low"],
                conversion["relative_lift"]["ci_high"],
                conversion["p_value"],
                row["conversion_q_value"],
                row["conversion_significant"],
                conversion["prob_treatment_better"],
                revenue["difference"]["value"],
                revenue["difference"]["ci_low"],
                revenue["difference"]["ci_high"],
                revenue["p_value"],
                report["conversion_decomposition"]["total"] if is_overall else part.get("contribution"),
                report["conversion_decomposition"]["total_ci_low"] if is_overall else part.get("ci_low"),
                report["conversion_decomposition"]["total_ci_high"] if is_overall else part.get("ci_high"),
                row["sample_ratio"]["p_value"],
                "" if is_overall else segment_key(result, row["name"]),
            ]
        )
    return rows


def metric_forest(result: dict, section: dict) -> str:
    """One metric's difference per segment and for all users (a section of result["metrics"])."""
    _unit, factor = UNITS[section["kind"]]
    rows = [*section["segments"], {**section["overall"], "significant": None}]
    names, values, low, high, colors = [], [], [], [], []
    for index, row in enumerate(rows):
        estimate, last = row["difference"], index == len(rows) - 1
        value = estimate["value"]
        names.append("All users" if last else _tick(result, row["name"]))
        values.append(None if value is None else value * factor)
        low.append(None if value is None or estimate["ci_low"] is None else (value - estimate["ci_low"]) * factor)
        high.append(None if value is None or estimate["ci_high"] is None else (estimate["ci_high"] - value) * factor)
        good = value is not None and (value > 0) == section["higher_is_better"]
        colors.append(INK if last else (GOOD if good else BAD) if row["significant"] else NEUTRAL)
    fig = go.Figure(
        go.Scatter(
            x=values,
            y=names,
            mode="markers",
            marker={"color": colors, "size": 11},
            error_x={"type": "data", "symmetric": False, "array": high, "arrayminus": low, "color": "#6b7280"},
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.add_vline(x=0, line_dash="dot", line_color="#6b7280")
    fig.update_layout(
        **_LAYOUT,
        height=80 + 34 * len(rows),
        showlegend=False,
        xaxis_title=f"difference, {_unit.strip() or section['name']}",
        yaxis={"autorange": "reversed"},
    )
    return fig.to_json()


def metric_waterfall(result: dict, section: dict) -> str | None:
    """One metric's segment contributions and mix (None for a ratio, which has no decomposition)."""
    decomposition = section.get("decomposition")
    if not decomposition:
        return None
    _unit, factor = UNITS[section["kind"]]
    parts = sorted(decomposition["contributions"], key=lambda c: -(c["contribution"] or 0))
    values = [(c["contribution"] or 0) * factor for c in parts] + [decomposition["mix"] * factor, None]
    fig = go.Figure(
        go.Waterfall(
            x=[_tick(result, c["name"]) for c in parts] + ["Mix", "Total"],
            y=values,
            measure=["relative"] * (len(parts) + 1) + ["total"],
            increasing={"marker": {"color": GOOD if section["higher_is_better"] else BAD}},
            decreasing={"marker": {"color": BAD if section["higher_is_better"] else GOOD}},
            totals={"marker": {"color": "#4f46e5"}},
            text=[f"{v:+.3f}" for v in values[:-1]] + [f"{decomposition['total'] * factor:+.3f}"],
            texttemplate="%{text}",
            textposition="outside",
        )
    )
    fig.update_layout(**_LAYOUT, height=360, yaxis_title=_unit.strip() or section["name"], showlegend=False)
    return fig.to_json()


# Rates in points, like the conversion charts; other kinds in their own units.
_METRIC_UNITS = {
    "conversion": (" points", 100.0),
    "retention": (" points", 100.0),
    "time_to_conversion": (" hours", 1.0),
}


def conversion_curve(section: dict, *, treatment_label: str = "Treated", holdout_label: str = "Held out") -> str:
    """Kaplan-Meier share converted by each hour since exposure, per arm, with its 95 % band (a
    time-to-conversion section's "survival"); drawn as 1 - S(t) because "converted by" reads easier."""
    fig = go.Figure()
    for arm, label, color in (("treatment", treatment_label, GOOD), ("holdout", holdout_label, NEUTRAL)):
        curve = section["survival"][arm]
        times = [0, *curve["times"]]

        def converted(values: list) -> list:
            return [0.0, *(None if v is None else 1 - v for v in values)]

        # The band: its upper edge invisibly, then the lower edge filled up to it (plotly's "tonexty").
        for edge, fill in (("band_high", "none"), ("band_low", "tonexty")):
            band = {"width": 0, "shape": "hv"}
            fig.add_trace(
                go.Scatter(
                    x=times,
                    y=converted(curve[edge]),
                    mode="lines",
                    line=band,
                    fill=fill,
                    legendgroup=arm,
                    fillcolor="rgba(107,114,128,0.15)",
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
        fig.add_trace(
            go.Scatter(
                x=times,
                y=converted(curve["survival"]),
                mode="lines",
                name=f"{label} ({curve['users']:,})",
                line={"color": color, "width": 2, "shape": "hv"},
                legendgroup=arm,
                hovertemplate="hour %{x}: %{y:.1%} converted<extra>" + escape(label) + "</extra>",
            )
        )
    fig.update_layout(
        **_LAYOUT,
        height=320,
        xaxis_title="hours since first exposure",
        yaxis={"title": "share converted (Kaplan–Meier)", "tickformat": ".0%", "rangemode": "tozero"},
        legend={"orientation": "h", "y": 1.15},
    )
    return fig.to_json()
