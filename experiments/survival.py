"""Time to conversion: the Kaplan-Meier curve, its Greenwood variance and the median, from counts.

People who have not converted yet are censored at the time they have been watched so far, so they
count as "still not converted" up to that time instead of being dropped (which would make
conversion look fast) or counted as never converting (which would make it look rare).

The SQL produces, per arm, one row per distinct time t (e.g. whole hours or days since first
exposure; the unit is the caller's):

    SELECT arm, t, COUNT(*) FILTER (WHERE converted) AS events,
                   COUNT(*) FILTER (WHERE NOT converted) AS censored
    FROM (SELECT arm, converted,
                 CASE WHEN converted THEN conversion_at - first_exposure
                      ELSE :as_of - first_exposure END AS t ...) GROUP BY arm, t

Conventions (those of statsmodels SurvfuncRight, lifelines and R's survfit): at a tied time the
conversions happen before the censorings, so the censored still count as at risk; the curve only
steps at times with a conversion. Pure numpy, no Django import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from experiments.stats_types import NAN


@dataclass(frozen=True)
class SurvivalCurve:
    """S(t) = share not converted yet after t, at each time with at least one conversion."""

    times: tuple[float, ...]
    at_risk: tuple[int, ...]
    events: tuple[int, ...]
    survival: tuple[float, ...]
    greenwood_variance: tuple[float, ...]  # Var S(t) = S(t)^2 Σ d / (n (n - d)); nan once S(t) = 0
    median: float  # first time with S(t) <= 0.5; nan while the curve has not reached 0.5

    def conversion_by(self, time: float) -> float:
        """Share converted by `time` (1 - S(time)); 0 before the first conversion."""
        passed = np.searchsorted(self.times, time, side="right")
        return 1 - self.survival[passed - 1] if passed else 0.0


def kaplan_meier(*, times: Sequence[float], events: Sequence[int], censored: Sequence[int]) -> SurvivalCurve:
    """The Kaplan-Meier estimate from per-time counts (times distinct, in any order).

    n at risk at t is everyone whose time is >= t; S(t) = Π_{t_i <= t} (1 - d_i / n_i). The median
    is the smallest t with S(t) <= 0.5 (lifelines and Collett's convention; statsmodels'
    SurvfuncRight.quantile uses S(t) < 0.5, SAS-style, which differs only when S hits 0.5 exactly).
    """
    t = np.asarray(times, dtype=float)
    d = np.asarray(events, dtype=np.int64)
    c = np.asarray(censored, dtype=np.int64)
    if not (t.shape == d.shape == c.shape and t.ndim == 1):
        raise ValueError("times, events and censored must be lists of the same length (one entry per time).")
    if (d < 0).any() or (c < 0).any():
        raise ValueError("events and censored are counts of people and cannot be negative.")
    if len(np.unique(t)) != len(t) or not np.isfinite(t).all():
        raise ValueError("times must be distinct finite numbers; add the counts of a repeated time together.")
    order = np.argsort(t)
    t, d, c = t[order], d[order], c[order]
    at_risk = (d + c)[::-1].cumsum()[::-1]
    step = d > 0
    t, d, at_risk = t[step], d[step], at_risk[step]
    survival = np.cumprod(1 - d / at_risk)
    # The last person converting makes n = d: S drops to 0 and Greenwood's sum is undefined there.
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(d / (at_risk * (at_risk - d)))
        variance = np.where(np.isfinite(greenwood), survival**2 * greenwood, NAN)
    reached = np.flatnonzero(survival <= 0.5)
    median = float(t[reached[0]]) if reached.size else NAN
    return SurvivalCurve(
        tuple(t.tolist()),
        tuple(at_risk.tolist()),
        tuple(d.tolist()),
        tuple(survival.tolist()),
        tuple(variance.tolist()),
        median,
    )


def median_interval(curve: SurvivalCurve, *, alpha: float = 0.05) -> tuple[float, float]:
    """(low, high) confidence interval of the median time, by inverting z-tests of S(t) = 0.5 on the
    complementary log-log scale with Greenwood's variance (Brookmeyer-Crowley; statsmodels'
    SurvfuncRight.quantile_ci default and SAS's). The limits are observed conversion times; high is
    inf while the curve's band has not passed below 0.5 yet (wait for more people), both nan when no
    time is consistent with a median (too few conversions)."""
    s = np.asarray(curve.survival, dtype=float)
    se = np.sqrt(np.asarray(curve.greenwood_variance, dtype=float))
    critical = float(special.ndtri(1 - alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.log(-np.log(s)) - np.log(-np.log(0.5))) * (-s * np.log(s)) / se
    inside = np.flatnonzero(np.abs(z) <= critical)  # nan (S = 0 or 1, se = 0) is never inside
    if not inside.size:
        return NAN, NAN
    high = curve.times[inside[-1] + 1] if inside[-1] + 1 < len(curve.times) else math.inf
    return curve.times[inside[0]], high


def survival_summary(curve: SurvivalCurve, *, users: int, alpha: float = 0.05) -> dict:
    """The curve as the Lift page draws it (JSON-able; nan and inf become None): S(t) with its
    pointwise Greenwood band (clipped to [0, 1]) and the median with its interval."""
    critical = float(special.ndtri(1 - alpha / 2))
    s = np.asarray(curve.survival, dtype=float)
    half = critical * np.sqrt(np.asarray(curve.greenwood_variance, dtype=float))
    low, high = median_interval(curve, alpha=alpha)

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "users": users,
        "times": list(curve.times),
        "survival": s.tolist(),
        "band_low": [finite(v) for v in np.clip(s - half, 0, 1).tolist()],
        "band_high": [finite(v) for v in np.clip(s + half, 0, 1).tolist()],
        "median": finite(curve.median),
        "median_low": finite(low),
        "median_high": finite(high),
    }
