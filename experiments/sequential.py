"""Always-valid (sequential) inference: results that stay honest when looked at every day.

A fixed-horizon interval is right once, at the sample size planned in advance. Looked at daily and
stopped at the first "significant" day, its 5 % false-positive rate becomes about 25 % over four
weeks (see `experiments.simulation`). The intervals here hold at every look at once.

Difference of two arms (any metric of `experiments.metrics_stats`): the normal-mixture
(mixture SPRT) confidence sequence of Johari et al. (2017, "Peeking at A/B tests") and Howard et al.
(2021), in the asymptotic form of Waudby-Smith et al. (2021, "Time-uniform central limit theory"):
with estimate D and its variance V (the sum of the arms' delta-method variances), the mixture
likelihood ratio of D against a value d0, with d ~ N(d0, tau^2) under the alternative, is

    L(d0) = sqrt(V / (V + tau^2)) * exp((D - d0)^2 tau^2 / (2 V (V + tau^2))),

and {d0 : L(d0) < 1 / alpha} is the interval D ± sqrt(V (V + tau^2) / tau^2 * log((V + tau^2) / (V alpha^2))).
The always-valid p-value is min(1, 1 / L(0)), kept as a running minimum over looks (pass the last
one back); the interval is kept as a running intersection the same way. It uses only the same
aggregates as the fixed-horizon test.

Choosing tau (the rule, fixed before the test starts): make the interval narrowest at the planned
end. At variance V_H the width is smallest for tau^2 = r V_H, where r solves r = log(1 + r) - 2 log(alpha)
(r = 8.21 at alpha = 0.05; Howard et al.'s closed form c + log(c + 1), c = -2 log(alpha), is its first
step), and V_H is the variance of the difference expected at the planned end: sigma^2 (1 / n_T + 1 / n_C)
with the metric's per-user variance sigma^2 (from before the test, or the first days) and the planned
users per arm. `mixture_variance_for_horizon` computes it. A wrong guess costs width, never validity.

Sample ratio, sequentially: the Dirichlet-multinomial mixture test of Lindon & Malek (2020,
"Anytime-valid inference for multinomial count data"): the Bayes factor of the arm counts against
the configured split, with a Dirichlet(concentration * shares) prior, is a test martingale, so
p = min(1, 1 / BF) (running minimum) is valid at every look. Exact, not asymptotic.

Which to trust when: if you decided the sample size in advance and look once at the end, read the
fixed-horizon interval (it is narrower); if you look before then, or may stop early, read the
always-valid one. Pure numpy/scipy, no Django import; the array functions take numpy arrays so the
simulation runs the same code for 1,000 experiments at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import special

from experiments.metrics_stats import Metric, Moments, compare_metric
from experiments.stats_types import NAN, Estimate


@dataclass(frozen=True)
class SequentialComparison:
    """Difference of a metric between arms with its always-valid interval and p-value."""

    difference: Estimate  # ci_low / ci_high: the always-valid interval (running intersection)
    p_value: float  # always-valid (running minimum)
    mixture_variance: float


@dataclass(frozen=True)
class SequentialSampleRatio:
    """Always-valid sample ratio check on arm counts."""

    counts: tuple[int, ...]
    expected_shares: tuple[float, ...]
    log_bayes_factor: float
    p_value: float  # running minimum
    mismatch: bool
    looks: int = 1
    first_mismatch_look: int | None = None  # 0-based index of the first look with p < threshold


def mixture_variance_for_horizon(*, variance_at_horizon: float, alpha: float = 0.05) -> float:
    """tau^2 = r V_H, r solving r = log(1 + r) - 2 log(alpha): narrowest interval at the planned end."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha}.")
    if not variance_at_horizon > 0:
        raise ValueError(
            "variance_at_horizon must be positive (sigma^2 (1/n_T + 1/n_C) at the planned end), "
            f"got {variance_at_horizon}."
        )
    c, r = -2 * math.log(alpha), 1.0
    for _ in range(100):  # a contraction (slope 1/(1+r) < 1/2 here): converges to 1e-15 in ~50 steps
        r = c + math.log1p(r)
    return r * variance_at_horizon


def mixture_half_width(*, variance: np.ndarray | float, mixture_variance: float, alpha: float = 0.05) -> np.ndarray:
    """Half-width of the always-valid interval for an estimate with this variance (arrays welcome)."""
    v = np.asarray(variance, dtype=float)
    total = v + mixture_variance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(v * total / mixture_variance * np.log(total / (v * alpha * alpha)))


def mixture_p_value(
    *, estimate: np.ndarray | float, variance: np.ndarray | float, mixture_variance: float
) -> np.ndarray:
    """min(1, 1 / L(0)) at one look (take the running minimum across looks yourself, or use sequential_compare)."""
    d, v = np.asarray(estimate, dtype=float), np.asarray(variance, dtype=float)
    total = v + mixture_variance
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = 0.5 * np.log(v / total) + d * d * mixture_variance / (2 * v * total)
    return np.minimum(1.0, np.exp(-log_ratio))


def sequential_compare(
    *,
    treatment: Moments,
    holdout: Moments,
    metric: Metric,
    mixture_variance: float,
    alpha: float = 0.05,
    previous: SequentialComparison | None = None,
) -> SequentialComparison:
    """Always-valid difference of `metric` at this look, narrowed by the previous look's result if given."""
    if not mixture_variance > 0:
        raise ValueError(
            f"mixture_variance must be positive (see mixture_variance_for_horizon), got {mixture_variance}."
        )
    fixed = compare_metric(treatment=treatment, holdout=holdout, metric=metric, alpha=alpha)
    d = fixed.difference.value
    variance = fixed.variance_treatment + fixed.variance_holdout
    if not (math.isfinite(d) and math.isfinite(variance) and variance > 0):
        return previous or SequentialComparison(Estimate(d), NAN, mixture_variance)
    half = float(mixture_half_width(variance=variance, mixture_variance=mixture_variance, alpha=alpha))
    low, high = d - half, d + half
    p_value = float(mixture_p_value(estimate=d, variance=variance, mixture_variance=mixture_variance))
    if previous is not None and math.isfinite(previous.p_value):
        low, high = max(low, previous.difference.ci_low), min(high, previous.difference.ci_high)
        p_value = min(p_value, previous.p_value)
    return SequentialComparison(Estimate(d, low, high, math.sqrt(variance)), p_value, mixture_variance)


def dirichlet_log_bayes_factor(*, counts: np.ndarray, shares: Sequence[float], concentration: float) -> np.ndarray:
    """log BF of Dirichlet-multinomial(concentration * shares) against multinomial(shares); counts (..., arms)."""
    x = np.asarray(counts, dtype=float)
    prior = concentration * np.asarray(shares, dtype=float)
    return (
        special.gammaln(prior.sum())
        - special.gammaln(prior.sum() + x.sum(axis=-1))
        + (special.gammaln(prior + x) - special.gammaln(prior)).sum(axis=-1)
        - (x * np.log(shares)).sum(axis=-1)
    )


def sequential_sample_ratio(
    *,
    counts: Sequence[int],
    expected_shares: Sequence[float],
    threshold: float = 0.001,
    concentration: float = 1000.0,
    previous_p_value: float = 1.0,
) -> SequentialSampleRatio:
    """Sample ratio mismatch that may be checked after every exposure (mismatch when p < threshold).

    `concentration` sets how far from the configured split the prior looks: 1,000 puts a prior
    standard deviation of about 1.6 points on a 50/50 share, the size of mismatch a broken
    redirect or bot filter produces; bigger finds smaller mismatches later.
    """
    shares = np.asarray(expected_shares, dtype=float)
    if len(counts) != len(shares) or len(shares) < 2 or (shares <= 0).any() or not math.isclose(shares.sum(), 1):
        raise ValueError(f"expected_shares must be one positive share per arm, adding up to 1; got {tuple(shares)}.")
    if any(c < 0 for c in counts):
        raise ValueError(f"counts are users per arm and cannot be negative, got {tuple(counts)}.")
    if not concentration > 0:
        raise ValueError(f"concentration must be positive (e.g. 1000), got {concentration}.")
    log_bf = float(dirichlet_log_bayes_factor(counts=np.asarray(counts), shares=shares, concentration=concentration))
    p_value = min(previous_p_value, 1.0, math.exp(-log_bf) if log_bf > -700 else 1.0)
    return SequentialSampleRatio(
        tuple(int(c) for c in counts), tuple(shares.tolist()), log_bf, p_value, p_value < threshold
    )


def sequential_sample_ratio_looks(
    *,
    counts_per_look: Sequence[Sequence[int]],
    expected_shares: Sequence[float],
    threshold: float = 0.001,
    concentration: float = 1000.0,
) -> SequentialSampleRatio:
    """The sequential check read at every look in turn (cumulative counts per look, e.g. one per day).

    Rebuilds the running minimum a reader would have seen had they opened the report after each look,
    so a mismatch once flagged stays flagged and `first_mismatch_look` says when it first showed.
    """
    result, first = None, None
    for look, counts in enumerate(counts_per_look):
        result = sequential_sample_ratio(
            counts=counts,
            expected_shares=expected_shares,
            threshold=threshold,
            concentration=concentration,
            previous_p_value=result.p_value if result else 1.0,
        )
        if result.mismatch and first is None:
            first = look
    if result is None:
        raise ValueError("counts_per_look must hold at least one look's arm counts.")
    return replace(result, looks=len(counts_per_look), first_mismatch_look=first)
