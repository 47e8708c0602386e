"""Plain-language sentences shown under the lift charts, built from a `LiftReport`.

Pure text formatting of numbers `experiments.stats` already computed; no Django import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from experiments.stats import p_value_text
from experiments.stats_types import Estimate, LiftReport, SegmentResult


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _sample_ratio_sentences(report: LiftReport, named) -> list[str]:
    sentences = [report.overall.sample_ratio.warning] if report.overall.sample_ratio.warning else []
    broken = [r for r in report.segments if r.sample_ratio.warning]
    if len(broken) == 1:
        sentences.append(broken[0].sample_ratio.warning.replace(f"({broken[0].name})", f"({named(broken[0].name)})", 1))
    elif broken:
        sentences.append(
            f"Sample ratio mismatch in {len(broken)} segments ({_join([named(r.name) for r in broken])}): their arm "
            f"sizes do not fit the configured {report.holdout_share * 100:.1f} % holdout, so their lifts are "
            f"unreliable."
        )
    return sentences


def summary_sentences(
    report: LiftReport,
    *,
    metric_label: str,
    metric: Literal["conversion", "revenue"] = "conversion",
    treatment_label: str = "Personalization",
    holdout_label: str = "the holdout",
    breakdown_label: str = "",
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """Plain-language findings for people who do not read p-values, most important first.

    `metric` picks the goal ("conversion": rate differences in percentage points; "revenue":
    differences per user, plus the CUPED result); `metric_label` is how the text names it.
    Sample ratio warnings come first in both because they invalidate everything after them.
    Segment claims ("for X it is negative") are made only for segments significant after
    correction. With `breakdown_label` (e.g. "literacy"), segments are named "literacy = 0": a bare
    value says nothing in a sentence. `labels` maps a segment's key to the name shown for it.
    """
    if metric not in ("conversion", "revenue"):
        raise ValueError(f'metric must be "conversion" or "revenue", got {metric!r}.')
    level = f"{round((1 - report.alpha) * 100, 6):g} % CI"

    label_of = labels or {}

    def named(name: str) -> str:
        name = label_of.get(name, name)
        return f"{breakdown_label} = {name}" if breakdown_label else name

    sentences = _sample_ratio_sentences(report, named)
    is_rate = metric == "conversion"

    def number(value: float, *, signed: bool = False) -> str:
        shown = value * 100 if is_rate else value  # rates in percentage points
        return f"{shown:+.2f}" if signed else f"{shown:.2f}"

    def amount(value: float, *, signed: bool = False) -> str:
        return number(value, signed=signed) + (" points" if is_rate else "")

    def lift_of(result: SegmentResult) -> Estimate:
        return result.conversion.absolute_lift if is_rate else result.revenue.difference

    def significant(result: SegmentResult) -> bool:
        return result.conversion_significant if is_rate else result.revenue_significant

    lift = lift_of(report.overall)
    if not math.isfinite(lift.ci_low):
        sentences.append(f"There is not enough data in both arms yet to measure the {metric_label} lift.")
        return sentences

    sign = 1 if lift.value >= 0 else -1
    ci = f"{level} {number(lift.ci_low)} to {number(lift.ci_high)}"
    headline = (
        f"{treatment_label} {'added' if sign > 0 else 'removed'} {amount(abs(lift.value))} "
        f"{'of' if is_rate else 'in'} {metric_label} ({ci})"
    )
    if not lift.excludes_zero:
        headline += ", which is not distinguishable from zero"
    decomposition = report.conversion_decomposition if is_rate else report.revenue_decomposition
    contributions = decomposition.contributions
    top = max(contributions, key=lambda c: sign * c.contribution if math.isfinite(c.contribution) else -1)
    if len(contributions) > 1 and lift.value != 0 and sign * top.contribution > 0:
        share = top.contribution / lift.value
        # Past 100 % a share reads as an error; other segments pulled the other way, so say so.
        headline += (
            f"; {share * 100:.0f} % of it came from {named(top.name)}"
            if share <= 1
            else f"; {named(top.name)} alone accounts for {amount(top.contribution, signed=True)}"
        )
    opposite = [named(r.name) for r in report.segments if significant(r) and sign * lift_of(r).value < 0]
    if opposite:
        headline += f"; for {_join(opposite)} it is {'negative' if sign > 0 else 'positive'}"
    sentences.append(headline + ".")
    baseline = report.overall.conversion.rate_holdout if is_rate else report.overall.revenue.mean_holdout
    if baseline > 0:
        shown = f"{baseline * 100:.2f} %" if is_rate else f"{baseline:.2f}"
        sentences.append(f"That is {lift.value / baseline * 100:+.1f} % relative to {holdout_label}'s {shown}.")

    if len(report.segments) > 1:
        method = "Benjamini-Hochberg" if report.correction == "bh" else "Holm"
        q_values = [r.conversion_q_value if is_rate else r.revenue_q_value for r in report.segments]
        clear = [
            f"{named(r.name)} ({amount(lift_of(r).value, signed=True)})" for r in report.segments if significant(r)
        ]
        counted = "1 segment shows" if len(clear) == 1 else f"{len(clear)} segments show"
        found = (
            f"{counted} a clear change in {metric_label}: {_join(clear)}"
            if clear
            else f"no single segment shows a clear change in {metric_label}"
        )
        tested = sum(math.isfinite(q) for q in q_values)
        sentences.append(f"After correcting for {tested} segments ({method}), {found}.")
    heterogeneity = report.conversion_heterogeneity if is_rate else report.revenue_heterogeneity
    if math.isfinite(heterogeneity.p_value):
        if heterogeneity.p_value < report.alpha:
            sentences.append(
                f"The lift differs between segments more than chance explains (Cochran's Q "
                f"p {p_value_text(heterogeneity.p_value)}, I² = {heterogeneity.i_squared * 100:.0f} %)."
            )
        else:
            sentences.append(
                f"Differences in lift between segments are consistent with chance (Cochran's Q "
                f"p {p_value_text(heterogeneity.p_value)})."
            )
    if abs(decomposition.mix) > 0.1 * abs(lift.value) and number(abs(decomposition.mix)) != number(0.0):
        sentences.append(
            f"{amount(decomposition.mix, signed=True)} of it come from the arms having different segment "
            f"mixes, not from personalization."
        )

    cuped = report.overall.cuped
    if not is_rate and cuped and math.isfinite(cuped.difference.ci_low) and cuped.variance_reduction >= 0.01:
        adjusted = cuped.difference
        sentences.append(
            f"Adjusting for pre-period behaviour (CUPED) gives {adjusted.value:+.2f} ({level} "
            f"{adjusted.ci_low:.2f} to {adjusted.ci_high:.2f}) with {cuped.variance_reduction * 100:.0f} % "
            f"less variance."
        )
    return sentences


def sequential_srm_sentence(*, mismatch: bool, p_value: float, looks: int, first_day: str | None) -> str:
    """What the always-valid sample ratio check found, and when to trust it over the one-off check."""
    days = f"{looks} daily look{'s' if looks != 1 else ''}"
    if mismatch:
        found = (
            f"Read after every day, the sample ratio check (always valid) flags a mismatch from {first_day} on "
            f"(p {p_value_text(p_value)} over {days}): this holds however often the report was opened."
        )
    else:
        found = (
            f"Read after every day, the sample ratio check (always valid) finds no mismatch over {days} "
            f"(p {p_value_text(p_value)})."
        )
    return (
        f"{found} Trust it over the one-off chi-square check whenever you look before the planned end: "
        "the chi-square is exact only when read once, and read daily it raises false alarms about five times "
        "as often as its threshold."
    )
