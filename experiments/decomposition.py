"""Kitagawa (Oaxaca-style) decomposition of an overall lift into segment contributions and mix.

With w the share of an arm's users in each segment and m the segment mean (conversion rate or
revenue per user), the overall lift is an exact identity:

    Δ = Σ w_T m_T - Σ w_C m_C
      = Σ w̄ (m_T - m_C)      segment contributions, w̄ = (w_T + w_C) / 2
      + Σ (w_T - w_C) m̄      mix term,              m̄ = (m_T + m_C) / 2

so contributions + mix reproduce Δ up to rounding. In a randomised test both arms have the same
segment mix up to noise, so the mix term is small; a large one points at a sample-ratio problem
inside segments. Works on per-(segment, arm) sums only. Pure numpy, no Django import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Contribution:
    """One segment's share of the overall lift; nan marks what an empty arm leaves undefined."""

    name: str
    share_treatment: float
    share_holdout: float
    effect: float
    contribution: float
    ci_low: float
    ci_high: float
    mix: float


@dataclass(frozen=True)
class Decomposition:
    """Overall lift = sum of contributions + mix, with a confidence interval for each part."""

    total: float
    total_ci_low: float
    total_ci_high: float
    mix: float
    contributions: tuple[Contribution, ...]


def _unit_variance(n: np.ndarray, total: np.ndarray, sumsq: np.ndarray, ddof: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        squares = np.maximum(sumsq - np.where(n > 0, total * total / n, 0.0), 0.0)
        return np.where(n > ddof, squares / (n - ddof), np.nan)


def decompose_lift(
    *,
    names: Sequence[str],
    n_treatment: Sequence[float],
    sum_treatment: Sequence[float],
    sumsq_treatment: Sequence[float],
    n_holdout: Sequence[float],
    sum_holdout: Sequence[float],
    sumsq_holdout: Sequence[float],
    ddof: int,
    critical: float,
) -> Decomposition:
    """Split the difference of overall arm means into per-segment contributions plus mix.

    Pass user counts, sums and sums of squares of the metric per segment and arm; for a binary
    goal sum = sumsq = conversions and ddof=0 (binomial variance p(1-p)), for revenue ddof=1.
    `critical` is the two-sided critical value (z or Welch t) used for every interval.

    Contribution intervals use the delta method with segment shares treated as fixed, i.e.
    Var = w̄² (s_T²/n_T + s_C²/n_C); the randomness of the shares themselves (which only feeds
    the mix term) is ignored. The total's interval is the ordinary unconditional two-arm one
    computed from the pooled sums, so it matches the overall Wald / Welch interval.

    A segment with no users in one arm has an unobservable effect: its effect and interval are
    nan, its contribution is 0 and its whole weight shows up in the mix term.
    """
    arrays = [
        np.asarray(values, dtype=float)
        for values in (n_treatment, sum_treatment, sumsq_treatment, n_holdout, sum_holdout, sumsq_holdout)
    ]
    nt, st, qt, nc, sc, qc = arrays
    total_t, total_c = nt.sum(), nc.sum()
    if total_t == 0 or total_c == 0:
        nan = math.nan
        empty = tuple(Contribution(name, nan, nan, nan, nan, nan, nan, nan) for name in names)
        return Decomposition(nan, nan, nan, nan, empty)

    wt, wc = nt / total_t, nc / total_c
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t, mean_c = st / nt, sc / nc
    effect = mean_t - mean_c
    # Impute an empty arm with the other arm's mean: its weight is zero, so the identity holds
    # for any value, and this choice puts the segment's whole weight into the mix term.
    filled_t = np.where(nt > 0, mean_t, np.where(nc > 0, mean_c, 0.0))
    filled_c = np.where(nc > 0, mean_c, filled_t)
    mean_weight = (wt + wc) / 2
    contribution = mean_weight * (filled_t - filled_c)
    mix = (wt - wc) * (filled_t + filled_c) / 2

    var_t, var_c = _unit_variance(nt, st, qt, ddof), _unit_variance(nc, sc, qc, ddof)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = mean_weight * np.sqrt(var_t / nt + var_c / nc)
    total = st.sum() / total_t - sc.sum() / total_c
    pooled_t = _unit_variance(total_t, st.sum(), qt.sum(), ddof)
    pooled_c = _unit_variance(total_c, sc.sum(), qc.sum(), ddof)
    total_se = float(np.sqrt(pooled_t / total_t + pooled_c / total_c))

    rows = tuple(
        Contribution(
            name=name,
            share_treatment=float(wt[i]),
            share_holdout=float(wc[i]),
            effect=float(effect[i]),
            contribution=float(contribution[i]),
            ci_low=float(contribution[i] - critical * se[i]),
            ci_high=float(contribution[i] + critical * se[i]),
            mix=float(mix[i]),
        )
        for i, name in enumerate(names)
    )
    return Decomposition(
        total=float(total),
        total_ci_low=float(total - critical * total_se),
        total_ci_high=float(total + critical * total_se),
        mix=float(mix.sum()),
        contributions=rows,
    )
