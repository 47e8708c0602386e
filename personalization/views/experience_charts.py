"""Plotly figures of the experience detail page, built from plain data (no Django import).

Figures go to the browser as JSON and are drawn by the local plotly.js. Every figure has a
`uirevision`, so a refresh from the 10-second poll keeps the reader's zoom and hidden traces.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import plotly.graph_objects as go
from scipy import stats

CONTROL_COLOR = "#6b7280"
PALETTE = ["#4f46e5", "#f59e0b", "#059669", "#dc2626", "#0891b2", "#7c3aed", "#db2777", "#65a30d"]
HOLDOUT_GLOBAL_COLOR = "#94a3b8"
HOLDOUT_EXPERIENCE_COLOR = "#cbd5e1"
_GRID = "#e5e7eb"


def variant_colors(order: Sequence[str], control: str) -> dict[str, str]:
    """Control in grey, the others in the palette, stable by position so colors match across charts."""
    colors, others = {}, iter(PALETTE * (len(order) // len(PALETTE) + 1))
    for key in order:
        colors[key] = CONTROL_COLOR if key == control else next(others)
    return colors


def _layout(fig: go.Figure, *, revision: str, height: int = 280, **extra) -> str:
    layout = {
        "template": "none",
        "height": height,
        "margin": {"l": 50, "r": 10, "t": 10, "b": 40},
        "legend": {"orientation": "h", "y": -0.22, "x": 0},
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12, "color": "#111827"},
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
        "hovermode": "x unified",
        "uirevision": revision,
    }
    fig.update_layout(**{**layout, **extra})
    fig.update_xaxes(gridcolor=_GRID, linecolor=_GRID, zeroline=False)
    fig.update_yaxes(gridcolor=_GRID, linecolor=_GRID, zeroline=False)
    return fig.to_json()


def _mode(points: int) -> str:
    # A line needs a few points before markers only clutter it.
    return "lines+markers" if points < 20 else "lines"


def allocation_figure(
    times: Sequence[datetime], weights: Sequence[Mapping[str, float]], *, order: Sequence[str], colors, revision: str
) -> str:
    """Share of new traffic per variant after each bandit update, stacked to 100 %."""
    fig = go.Figure()
    for key in order:
        fig.add_scatter(
            x=list(times),
            y=[w.get(key, 0.0) for w in weights],
            name=key,
            mode="lines",
            stackgroup="weights",
            line={"color": colors[key], "width": 1},
            hovertemplate="%{y:.1%}",
        )
    return _layout(
        fig,
        revision=revision,
        legend={"orientation": "h", "y": -0.22, "x": 0, "traceorder": "normal"},
        yaxis={"tickformat": ".0%", "range": [0, 1]},
    )


def split_figure(shares: Mapping[str, float], *, colors, revision: str) -> str:
    """The configured fixed split, one bar per variant."""
    keys = list(shares)
    fig = go.Figure()
    fig.add_bar(
        x=[shares[k] for k in keys],
        y=keys,
        orientation="h",
        marker_color=[colors[k] for k in keys],
        text=[f"{shares[k]:.0%}" for k in keys],
        textposition="auto",
        hovertemplate="%{y}: %{x:.1%}<extra></extra>",
    )
    return _layout(
        fig,
        revision=revision,
        height=max(160, 60 + 40 * len(keys)),
        hovermode="closest",
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        xaxis={"tickformat": ".0%", "range": [0, 1]},
        yaxis={"autorange": "reversed", "automargin": True},
    )


def rate_figure(
    times: Sequence[datetime], counts: Sequence[Mapping[str, Sequence[int]]], *, order, colors, revision: str
) -> str:
    """Cumulative conversion rate per variant; `counts` holds variant → (exposures, conversions) at each time."""
    fig = go.Figure()
    for key in order:
        exposures = [c.get(key, (0, 0))[0] for c in counts]
        conversions = [c.get(key, (0, 0))[1] for c in counts]
        fig.add_scatter(
            x=list(times),
            y=[conv / n if n else None for n, conv in zip(exposures, conversions, strict=True)],
            customdata=list(zip(conversions, exposures, strict=True)),
            name=key,
            mode=_mode(len(times)),
            line={"color": colors[key], "width": 2},
            hovertemplate="%{y:.2%} (%{customdata[0]:,} / %{customdata[1]:,})",
        )
    return _layout(fig, revision=revision, yaxis={"tickformat": ".1%", "rangemode": "tozero"})


def posterior_params(exposures: int, conversions: int) -> tuple[float, float]:
    """Beta posterior of a conversion rate under a uniform prior (as personalization.experiences.thompson)."""
    return 1.0 + conversions, 1.0 + exposures - conversions


def posterior_summary(exposures: int, conversions: int) -> dict[str, float]:
    """Posterior mean and 95 % credible interval of a conversion rate."""
    a, b = posterior_params(exposures, conversions)
    low, high = stats.beta.ppf([0.025, 0.975], a, b)
    return {"mean": a / (a + b), "low": float(low), "high": float(high)}


def posterior_grid(counts: Mapping[str, Sequence[int]], points: int = 400) -> np.ndarray:
    """Rates spanning every arm's posterior (mean ± 5 sd), clipped to [0, 1]."""
    params = [posterior_params(n, c) for n, c in counts.values()]
    means = np.array([a / (a + b) for a, b in params])
    sds = np.array([np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))) for a, b in params])
    low = max(0.0, float((means - 5 * sds).min()))
    high = min(1.0, float((means + 5 * sds).max()))
    return np.linspace(low, high, points)


def posterior_figure(counts: Mapping[str, Sequence[int]], *, colors, revision: str) -> str:
    """Density of Beta(1 + conversions, 1 + exposures - conversions) per variant."""
    grid = posterior_grid(counts)
    fig = go.Figure()
    for key, (n, c) in counts.items():
        a, b = posterior_params(n, c)
        fig.add_scatter(
            x=grid.tolist(),
            y=stats.beta.pdf(grid, a, b).tolist(),
            name=key,
            mode="lines",
            fill="tozeroy",
            line={"color": colors[key], "width": 2},
            hovertemplate="%{fullData.name}: %{x:.2%}<extra></extra>",
        )
    return _layout(
        fig, revision=revision, hovermode="closest", xaxis={"tickformat": ".1%"}, yaxis={"showticklabels": False}
    )


def arms_figure(bars: Sequence[tuple[str, int, str]], *, revision: str) -> str:
    """People per arm: (label, people, color) for each variant and the two holdouts."""
    fig = go.Figure()
    fig.add_bar(
        x=[users for _, users, _ in bars],
        y=[label for label, _, _ in bars],
        orientation="h",
        marker_color=[color for _, _, color in bars],
        text=[f"{users:,}" for _, users, _ in bars],
        textposition="auto",
        hovertemplate="%{y}: %{x:,} people<extra></extra>",
    )
    return _layout(
        fig,
        revision=revision,
        hovermode="closest",
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        xaxis={"rangemode": "tozero"},
        yaxis={"autorange": "reversed", "automargin": True},
    )
