"""What daily peeking does to false positives: many simulated experiments, looked at every day.

Each experiment gets `users_per_day` new users per arm per day, converting with `base_rate` (holdout)
and `base_rate * (1 + relative_lift)` (treatment). Daily conversions are binomial, which is exactly
what per-user Bernoulli draws would aggregate to (and only converters draw a revenue), so 1,000
experiments x 28 days is a few million numbers instead of tens of millions. At every look the
difference of the metric's means is tested three ways:

- fixed horizon, peeking: the usual z-test each day, stopping at the first p < alpha;
- fixed horizon, honest: the same test once, on the last day;
- always valid: the mixture-SPRT interval of `experiments.sequential` each day, tau chosen by its
  documented rule from the planned end, stopping at the first interval that excludes 0.

The sequential sample-ratio check is simulated the same way on the arm counts of a 50/50 split
(optionally broken to `treatment_share`). Used by tests/experiments/test_simulation.py and bench/peeking.py.
Pure numpy, no Django import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from experiments.sequential import (
    dirichlet_log_bayes_factor,
    mixture_half_width,
    mixture_p_value,
    mixture_variance_for_horizon,
)


@dataclass(frozen=True)
class PeekingResult:
    """Share of experiments declared significant (a false positive when the lift is 0)."""

    experiments: int
    days: int
    relative_lift: float
    fixed_horizon_peeking: float  # any daily z-test p < alpha
    fixed_horizon_final: float  # z-test on the last day only
    always_valid: float  # any daily always-valid interval excludes 0
    always_valid_p_consistent: bool  # the running-min p-value crossed alpha exactly when the interval excluded 0


@dataclass(frozen=True)
class SampleRatioPeekingResult:
    """Share of experiments flagged for a sample ratio mismatch at any daily look."""

    experiments: int
    days: int
    treatment_share: float
    chi_square_peeking: float  # daily chi-square p < threshold
    sequential: float  # daily Dirichlet-multinomial always-valid p < threshold


def peeking_simulation(
    *,
    experiments: int = 1000,
    days: int = 28,
    users_per_day: int = 1000,
    base_rate: float = 0.05,
    relative_lift: float = 0.0,
    revenue_sigma: float | None = None,
    alpha: float = 0.05,
    seed: int = 20,
) -> PeekingResult:
    """Run the experiments and report the share found significant by each way of looking.

    The metric is conversion (0/1 per user), or with `revenue_sigma` revenue per user: converters
    spend a lognormal amount with that log-scale spread (2 is a heavy tail: the top 1 % of buyers
    spend over 100 times the median), which tests the large-sample approximation both intervals lean on.
    """
    rng = np.random.default_rng(seed)
    rates = np.array([base_rate * (1 + relative_lift), base_rate])
    daily = rng.binomial(users_per_day, rates, size=(experiments, days, 2))
    if revenue_sigma is None:
        sums = sumsq = daily  # a 0/1 value per user: its square is itself
        per_user_variance = base_rate * (1 - base_rate)
    else:
        # Each converter spends a lognormal amount (median 1): the sums per (experiment, day, arm) cell.
        cell = np.repeat(np.arange(daily.size), daily.ravel())
        spend = rng.lognormal(0.0, revenue_sigma, cell.size)
        sums = np.bincount(cell, weights=spend, minlength=daily.size).reshape(daily.shape)
        sumsq = np.bincount(cell, weights=spend * spend, minlength=daily.size).reshape(daily.shape)
        moment1, moment2 = math.exp(revenue_sigma**2 / 2), math.exp(2 * revenue_sigma**2)
        per_user_variance = base_rate * moment2 - (base_rate * moment1) ** 2
    n = users_per_day * np.arange(1, days + 1)[None, :, None]
    total, total_sq = sums.cumsum(axis=1), sumsq.cumsum(axis=1)
    # The delta-method variance of a mean, as metrics_stats computes it from the same sums.
    variance = ((total_sq - total * total / n) / (n * (n - 1))).sum(axis=2)
    difference = (total[..., 0] - total[..., 1]) / n[..., 0]

    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(difference) / np.sqrt(variance)
    critical = special.ndtri(1 - alpha / 2)
    fixed = z > critical

    planned_variance = per_user_variance * 2 / (users_per_day * days)
    tau2 = mixture_variance_for_horizon(variance_at_horizon=planned_variance, alpha=alpha)
    half = mixture_half_width(variance=variance, mixture_variance=tau2, alpha=alpha)
    excludes = np.abs(difference) > half
    p_running = np.minimum.accumulate(
        mixture_p_value(estimate=difference, variance=variance, mixture_variance=tau2), axis=1
    )
    crossed = (p_running < alpha).any(axis=1)
    return PeekingResult(
        experiments=experiments,
        days=days,
        relative_lift=relative_lift,
        fixed_horizon_peeking=float(fixed.any(axis=1).mean()),
        fixed_horizon_final=float(fixed[:, -1].mean()),
        always_valid=float(excludes.any(axis=1).mean()),
        always_valid_p_consistent=bool((crossed == excludes.any(axis=1)).all()),
    )


def sample_ratio_peeking_simulation(
    *,
    experiments: int = 1000,
    days: int = 28,
    users_per_day: int = 2000,
    treatment_share: float = 0.5,
    threshold: float = 0.05,
    concentration: float = 1000.0,
    seed: int = 21,
) -> SampleRatioPeekingResult:
    """Daily arm counts from a configured 50/50 split that really runs at `treatment_share`."""
    rng = np.random.default_rng(seed)
    treatment = rng.binomial(users_per_day, treatment_share, size=(experiments, days)).cumsum(axis=1)
    total = users_per_day * np.arange(1, days + 1)[None, :]
    counts = np.stack([treatment, total - treatment], axis=-1)
    chi2 = ((counts - total[..., None] / 2) ** 2 / (total[..., None] / 2)).sum(axis=-1)
    chi_square = special.chdtrc(1, chi2) < threshold
    log_bf = dirichlet_log_bayes_factor(counts=counts, shares=[0.5, 0.5], concentration=concentration)
    sequential = log_bf > -np.log(threshold)
    return SampleRatioPeekingResult(
        experiments=experiments,
        days=days,
        treatment_share=treatment_share,
        chi_square_peeking=float(chi_square.any(axis=1).mean()),
        sequential=float(sequential.any(axis=1).mean()),
    )
