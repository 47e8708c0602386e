"""Every metric of a report, per segment: the same corrections, decomposition and sentences as the
conversion report, from one Moments row per (segment, arm, metric). Pure, no Django import.

A metric arrives as its spec (experiments.models.Metric.spec) plus its role in the report
("primary", "secondary", "guardrail"). Its Moments columns are [value, pre-exposure value] for a
mean metric (conversion, revenue, count, retention, time to conversion) and [numerator,
denominator, pre numerator, pre denominator] for a ratio, as personalization's metric cells SQL
produces them. Per segment: the difference with its delta-method interval (compare_metric),
Benjamini-Hochberg or Holm across segments, CUPED with the metric's own pre-exposure value
(cuped_compare) and the variance it removed, and CUPAC with the predictive score decide recorded at
exposure when the cells carry it (a last column per metric). Overall, beside the fixed-horizon interval: the
always-valid (mixture SPRT) interval. A guardrail is "worse" when its overall difference is
significant in the direction its spec calls bad.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from scipy import special

from experiments.decomposition import decompose_lift
from experiments.metrics_stats import Moments, compare_metric, cuped_compare
from experiments.sequential import mixture_variance_for_horizon, sequential_compare
from experiments.stats import adjust_p_values, cochran_q, p_value_text
from experiments.stats_types import jsonable

Cell = tuple[str, int, bool, Sequence[Moments]]

# How a kind's value reads in a sentence, and the factor it is shown with.
UNITS = {
    "conversion": (" points", 100.0),
    "retention": (" points", 100.0),
    "revenue": (" per user", 1.0),
    "count": (" events per user", 1.0),
    "time_to_conversion": (" hours", 1.0),
    "ratio": ("", 1.0),
}


def _columns(spec: Mapping) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return ((0, 1), (2, 3)) if spec["kind"] == "ratio" else ((0,), (1,))


def _predicted(spec: Mapping, treatment: Moments, holdout: Moments) -> tuple[int] | None:
    """The CUPAC covariate's column (the score decide recorded at exposure, after the metric's own
    columns), or None when the cells carry none or no exposure recorded a score (all zeros)."""
    column = 4 if spec["kind"] == "ratio" else 2
    if len(holdout.sums) <= column:
        return None
    if not (treatment.sums[column] or holdout.sums[column]):  # scores are never negative: all zeros
        return None
    return (column,)


def _adjusted(result) -> dict:
    return {
        "difference": _estimate(result.difference),
        "p_value": result.p_value,
        "theta": result.theta,
        "variance_reduction": result.variance_reduction,
    }


def _estimate(estimate) -> dict:
    return {
        "value": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "std_error": estimate.std_error,
    }


def _compare(spec: Mapping, name: str, treatment: Moments, holdout: Moments, alpha: float) -> dict:
    metric, covariate = _columns(spec)
    fixed = compare_metric(treatment=treatment, holdout=holdout, metric=metric, alpha=alpha)
    cuped = cuped_compare(treatment=treatment, holdout=holdout, metric=metric, covariate=covariate, alpha=alpha)
    predicted = _predicted(spec, treatment, holdout)
    cupac = None
    if predicted is not None:
        cupac = cuped_compare(treatment=treatment, holdout=holdout, metric=metric, covariate=predicted, alpha=alpha)
    return {
        "name": name,
        "users_treatment": treatment.n,
        "users_holdout": holdout.n,
        "value_treatment": fixed.value_treatment,
        "value_holdout": fixed.value_holdout,
        "difference": _estimate(fixed.difference),
        "relative": _estimate(fixed.relative_lift),
        "p_value": fixed.p_value,
        "cuped": _adjusted(cuped),
        # CUPAC: the same adjustment with the predictive score recorded at exposure; None without scores.
        "cupac": None if cupac is None else _adjusted(cupac),
    }


def _always_valid(spec: Mapping, treatment: Moments, holdout: Moments, alpha: float) -> dict:
    """The mixture SPRT interval, its mixture tuned to be narrowest at the current sample size."""
    metric, _ = _columns(spec)
    fixed = compare_metric(treatment=treatment, holdout=holdout, metric=metric, alpha=alpha)
    variance = fixed.variance_treatment + fixed.variance_holdout
    if not (math.isfinite(variance) and variance > 0):
        return {"ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    tau2 = mixture_variance_for_horizon(variance_at_horizon=variance, alpha=alpha)
    result = sequential_compare(treatment=treatment, holdout=holdout, metric=metric, mixture_variance=tau2, alpha=alpha)
    return {"ci_low": result.difference.ci_low, "ci_high": result.difference.ci_high, "p_value": result.p_value}


def _worse(spec: Mapping, overall: dict, alpha: float) -> bool:
    difference, p_value = overall["difference"]["value"], overall["p_value"]
    if not (math.isfinite(difference) and math.isfinite(p_value)) or p_value > alpha:
        return False
    return difference < 0 if spec["higher_is_better"] else difference > 0


def metric_section(
    *,
    spec: Mapping,
    segments: Sequence[tuple[str, Moments, Moments]],
    alpha: float = 0.05,
    correction: str = "bh",
) -> dict:
    """One metric's part of the report (JSON-able): overall, per segment, decomposition, sentences."""
    if not segments:
        raise ValueError("segments must contain at least one (name, treatment, holdout) row.")
    treatment_total = sum((t for _, t, _ in segments[1:]), segments[0][1])
    holdout_total = sum((h for _, _, h in segments[1:]), segments[0][2])
    overall = _compare(spec, "All users", treatment_total, holdout_total, alpha)
    overall["always_valid"] = _always_valid(spec, treatment_total, holdout_total, alpha)
    rows = [_compare(spec, name, t, h, alpha) for name, t, h in segments]
    q_values = adjust_p_values(p_values=[r["p_value"] for r in rows], method=correction)
    for row, q in zip(rows, q_values, strict=True):
        row["q_value"] = float(q)
        row["significant"] = bool(q <= alpha)
    decomposition = None
    if spec["kind"] != "ratio":  # a ratio does not split into shares of users; its forest still shows
        critical = float(special.ndtri(1 - alpha / 2))
        decomposition = decompose_lift(
            names=[name for name, _, _ in segments],
            n_treatment=[t.n for _, t, _ in segments],
            sum_treatment=[t.sums[0] for _, t, _ in segments],
            sumsq_treatment=[t.products[0][0] for _, t, _ in segments],
            n_holdout=[h.n for _, _, h in segments],
            sum_holdout=[h.sums[0] for _, _, h in segments],
            sumsq_holdout=[h.products[0][0] for _, _, h in segments],
            ddof=1,
            critical=critical,
        )
    heterogeneity = cochran_q(
        estimates=[r["difference"]["value"] for r in rows], std_errors=[r["difference"]["std_error"] for r in rows]
    )
    section = {
        "key": spec["key"],
        "name": spec["name"],
        "kind": spec["kind"],
        "role": spec.get("role", "secondary"),
        "higher_is_better": spec["higher_is_better"],
        "winsorize_percentile": spec.get("winsorize_percentile"),
        "overall": overall,
        "segments": rows,
        "decomposition": decomposition,
        "heterogeneity": heterogeneity,
        "worse": _worse(spec, overall, alpha),
    }
    section = jsonable(_asdicts(section))
    section["sentences"] = metric_sentences(section, alpha=alpha, correction=correction)
    return section


def _asdicts(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _asdicts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_asdicts(v) for v in value]
    return value


def metric_amount(section: Mapping, value: float | None, *, signed: bool = False) -> str:
    """A difference of this metric in words: "+1.20 points", "-0.42 per user"."""
    if value is None:
        return "—"
    unit, factor = UNITS[section["kind"]]
    return (f"{value * factor:+.2f}" if signed else f"{value * factor:.2f}") + unit


def metric_sentences(
    section: Mapping,
    *,
    alpha: float = 0.05,
    correction: str = "bh",
    labels: Mapping[str, str] | None = None,
    treatment_label: str = "Personalization",
) -> list[str]:
    """Plain-language findings for one metric, guardrail warning first (it overrides good news)."""
    named = labels or {}
    overall, name = section["overall"], section["name"]
    difference = overall["difference"]
    sentences = []
    if difference["ci_low"] is None:
        return [f"There is not enough data in both arms yet to measure {name}."]
    if section["worse"]:
        sentences.append(
            f"Guardrail {name} got worse: {metric_amount(section, difference['value'], signed=True)}"
            f" (95 % CI {metric_amount(section, difference['ci_low'], signed=True)} to"
            f" {metric_amount(section, difference['ci_high'], signed=True)}, p {p_value_text(overall['p_value'])}):"
            " weigh this against the primary metric before shipping."
        )
    level = f"{round((1 - alpha) * 100, 6):g} % CI"
    headline = (
        f"{treatment_label} changed {name} by {metric_amount(section, difference['value'], signed=True)}"
        f" ({level} {metric_amount(section, difference['ci_low'], signed=True)} to"
        f" {metric_amount(section, difference['ci_high'], signed=True)})"
    )
    if difference["ci_low"] <= 0 <= difference["ci_high"]:
        headline += ", which is not distinguishable from zero"
    sentences.append(headline + ".")
    cuped = overall["cuped"]
    reduction = cuped["variance_reduction"]
    if reduction is not None and reduction >= 0.01 and cuped["difference"]["ci_low"] is not None:
        sentences.append(
            f"Adjusting for each person's {name} in the 14 days before exposure (CUPED) gives"
            f" {metric_amount(section, cuped['difference']['value'], signed=True)} with {reduction * 100:.0f} %"
            " less variance."
        )
    cupac = overall["cupac"] or {}
    reduction = cupac.get("variance_reduction")
    if reduction is not None and reduction >= 0.01 and cupac["difference"]["ci_low"] is not None:
        sentences.append(
            "Adjusting for each person's predicted score at exposure (CUPAC) gives"
            f" {metric_amount(section, cupac['difference']['value'], signed=True)} with {reduction * 100:.0f} %"
            " less variance."
        )
    segments = section["segments"]
    if len(segments) > 1:
        method = "Benjamini-Hochberg" if correction == "bh" else "Holm"
        clear = [
            f"{named.get(r['name'], r['name'])} ({metric_amount(section, r['difference']['value'], signed=True)})"
            for r in segments
            if r["significant"]
        ]
        tested = sum(r["q_value"] is not None for r in segments)
        found = (
            f"{len(clear)} segment{'s' if len(clear) != 1 else ''} show{'s' if len(clear) == 1 else ''}"
            f" a clear change: {', '.join(clear)}"
            if clear
            else "no single segment shows a clear change"
        )
        sentences.append(f"After correcting for {tested} segments ({method}), {found}.")
    valid = overall.get("always_valid") or {}
    if valid.get("ci_low") is not None:
        sentences.append(
            f"Always-valid interval: {metric_amount(section, valid['ci_low'], signed=True)} to"
            f" {metric_amount(section, valid['ci_high'], signed=True)}. Trust it if you look at this report before"
            " the planned end or may stop early; the narrower fixed-horizon interval holds only for one look at"
            " the sample size you planned."
        )
    return sentences


def metrics_report(
    *,
    specs: Sequence[Mapping],
    cells: Sequence[Cell],
    alpha: float = 0.05,
    correction: str = "bh",
    order: Sequence[str] | None = None,
) -> list[dict]:
    """One section per metric (primary first, then secondary, then guardrails), from the cells the
    metric cells SQL returns, rolled up per segment (sufficient statistics add up)."""
    totals: dict[tuple[str, bool], list[Moments]] = {}
    for segment, _day, treated, moments in cells:
        key = (segment, treated)
        totals[key] = [a + b for a, b in zip(totals[key], moments, strict=True)] if key in totals else list(moments)
    names = order or sorted(
        {s for s, _ in totals}, key=lambda s: (-sum(totals[(s, t)][0].n for t in (True, False) if (s, t) in totals), s)
    )
    sections = []
    for index, spec in enumerate(specs):
        width = 4 if spec["kind"] == "ratio" else 2
        empty = Moments(0, (0.0,) * width, tuple((0.0,) * width for _ in range(width)))
        rows = [
            (s, totals.get((s, True), [empty] * len(specs))[index], totals.get((s, False), [empty] * len(specs))[index])
            for s in names
        ]
        sections.append(metric_section(spec=spec, segments=rows, alpha=alpha, correction=correction))
    return sections
