"""experiments.sequential against independent references: the mixture likelihood ratio integrated
numerically (scipy quad) and the Dirichlet-multinomial pmf of scipy.stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from experiments.metrics_stats import Moments, compare_metric
from experiments.sequential import (
    mixture_half_width,
    mixture_p_value,
    mixture_variance_for_horizon,
    sequential_compare,
    sequential_sample_ratio,
    sequential_sample_ratio_looks,
)

TOL = 1e-9


def mixture_likelihood_ratio(estimate: float, variance: float, tau2: float, null: float = 0.0) -> float:
    """∫ N(D; d, V) N(d; null, tau^2) dd / N(D; null, V), by quadrature: the mSPRT statistic from its definition."""
    sd = math.sqrt(tau2)

    def integrand(d: float) -> float:
        return sps.norm.pdf(estimate, d, math.sqrt(variance)) * sps.norm.pdf(d, null, sd)

    scale = math.sqrt(variance)
    centre = estimate * tau2 / (tau2 + variance) + null * variance / (tau2 + variance)
    value, _ = integrate.quad(integrand, centre - 40 * scale, centre + 40 * scale, epsabs=0, epsrel=1e-13, limit=200)
    return value / sps.norm.pdf(estimate, null, scale)


@pytest.mark.parametrize(("estimate", "variance", "tau2"), [(0.01, 4e-5, 3e-4), (-0.3, 0.02, 0.05), (0.0, 1.0, 8.0)])
def test_p_value__is_one_over_the_integrated_mixture_likelihood_ratio(estimate, variance, tau2):
    expected = min(1.0, 1 / mixture_likelihood_ratio(estimate, variance, tau2))
    actual = float(mixture_p_value(estimate=estimate, variance=variance, mixture_variance=tau2))
    assert math.isclose(actual, expected, rel_tol=TOL, abs_tol=TOL)


@pytest.mark.parametrize(("variance", "tau2", "alpha"), [(4e-5, 3e-4, 0.05), (0.02, 0.05, 0.1)])
def test_half_width__interval_edges_are_where_the_likelihood_ratio_reaches_one_over_alpha(variance, tau2, alpha):
    estimate = 0.7
    half = float(mixture_half_width(variance=variance, mixture_variance=tau2, alpha=alpha))
    for edge in (estimate - half, estimate + half):
        assert math.isclose(mixture_likelihood_ratio(estimate, variance, tau2, null=edge), 1 / alpha, rel_tol=1e-8)


def test_mixture_variance_for_horizon__gives_the_narrowest_interval_at_the_planned_end():
    v_h = 2.5e-5
    tau2 = mixture_variance_for_horizon(variance_at_horizon=v_h, alpha=0.05)
    r = tau2 / v_h
    assert math.isclose(r, math.log1p(r) - 2 * math.log(0.05), rel_tol=1e-12)
    best = float(mixture_half_width(variance=v_h, mixture_variance=tau2))
    for factor in (0.9, 0.99, 1.01, 1.1):
        assert float(mixture_half_width(variance=v_h, mixture_variance=tau2 * factor)) > best


@pytest.mark.parametrize(
    ("field", "kwargs"), [("alpha", {"alpha": 1.5}), ("variance_at_horizon", {"variance_at_horizon": 0})]
)
def test_mixture_variance_for_horizon__bad_input__raises_naming_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        mixture_variance_for_horizon(**{"variance_at_horizon": 1e-4, **kwargs})


def arms(seed: int, n: int, lift: float) -> tuple[Moments, Moments]:
    rng = np.random.default_rng(seed)
    return (
        Moments.from_values((rng.random(n) < 0.05 * (1 + lift)).astype(float)),
        Moments.from_values((rng.random(n) < 0.05).astype(float)),
    )


def test_sequential_compare__wider_than_fixed_horizon_and_consistent_with_its_p_value():
    treatment, holdout = arms(1, 40_000, 0.15)
    tau2 = mixture_variance_for_horizon(variance_at_horizon=2 * 0.05 * 0.95 / 40_000)
    result = sequential_compare(treatment=treatment, holdout=holdout, metric=(0,), mixture_variance=tau2)
    fixed = compare_metric(treatment=treatment, holdout=holdout, metric=(0,))
    assert result.difference.value == fixed.difference.value
    assert result.difference.ci_low < fixed.difference.ci_low and result.difference.ci_high > fixed.difference.ci_high
    assert (result.p_value < 0.05) == (result.difference.ci_low > 0 or result.difference.ci_high < 0)
    assert result.p_value > fixed.p_value


def conversion_look(users: int, converted_t: int, converted_c: int, previous=None):
    """One daily look at a conversion metric (0/1 per user: the sum of squares is the sum)."""
    return sequential_compare(
        treatment=Moments(users, (converted_t,), ((converted_t,),)),
        holdout=Moments(users, (converted_c,), ((converted_c,),)),
        metric=(0,),
        mixture_variance=1e-4,
        previous=previous,
    )


def test_sequential_compare__previous_look__narrows_the_interval_and_keeps_the_smallest_p():
    first = conversion_look(1000, 80, 40)
    # A later look where the difference shrank: its own interval would sit lower and its p be larger.
    later = conversion_look(4000, 230, 200, previous=first)
    alone = conversion_look(4000, 230, 200)
    assert later.p_value == min(first.p_value, alone.p_value) == first.p_value
    assert later.difference.ci_low == max(first.difference.ci_low, alone.difference.ci_low)
    assert later.difference.ci_high == min(first.difference.ci_high, alone.difference.ci_high)


def test_sequential_compare__empty_arm__is_nan_and_bad_tau__raises():
    empty = Moments(0, (0.0,), ((0.0,),))
    result = sequential_compare(treatment=empty, holdout=empty, metric=(0,), mixture_variance=1e-4)
    assert math.isnan(result.p_value) and math.isnan(result.difference.ci_low)
    with pytest.raises(ValueError, match="mixture_variance must be positive"):
        sequential_compare(treatment=empty, holdout=empty, metric=(0,), mixture_variance=0)


@pytest.mark.parametrize(("counts", "shares"), [((5030, 4970), (0.5, 0.5)), ((812, 95, 93), (0.8, 0.1, 0.1))])
def test_sequential_srm__bayes_factor__matches_scipy_dirichlet_multinomial_over_multinomial(counts, shares):
    concentration = 1000.0
    n = sum(counts)
    expected = sps.dirichlet_multinomial.logpmf(counts, np.multiply(shares, concentration), n) - sps.multinomial.logpmf(
        counts, n, shares
    )
    result = sequential_sample_ratio(counts=counts, expected_shares=shares, concentration=concentration)
    assert math.isclose(result.log_bayes_factor, expected, rel_tol=TOL, abs_tol=TOL)
    assert math.isclose(result.p_value, min(1.0, math.exp(-expected)), rel_tol=TOL)


def test_sequential_srm__broken_split_is_flagged_and_a_fair_one_is_not():
    assert sequential_sample_ratio(counts=(51_000, 49_000), expected_shares=(0.5, 0.5)).mismatch
    fair = sequential_sample_ratio(counts=(50_100, 49_900), expected_shares=(0.5, 0.5))
    assert not fair.mismatch and fair.p_value == 1.0
    kept = sequential_sample_ratio(counts=(50_100, 49_900), expected_shares=(0.5, 0.5), previous_p_value=0.0004)
    assert kept.mismatch and kept.p_value == 0.0004  # once flagged at a look, a later look cannot unflag it


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"expected_shares": (0.5, 0.6)}, "expected_shares"),
        ({"expected_shares": (1.0,), "counts": (3,)}, "expected_shares"),
        ({"counts": (-1, 4)}, "counts"),
        ({"concentration": 0}, "concentration"),
    ],
)
def test_sequential_srm__bad_input__raises_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        sequential_sample_ratio(**{"counts": (10, 12), "expected_shares": (0.5, 0.5), **kwargs})


def test_sequential_srm_looks__running_minimum_of_each_looks_p_and_the_first_flagged_look():
    looks = [(540, 460), (1_130, 870), (1_560, 1_440), (2_000, 2_000)]  # drifts off 50/50, then back
    shares = (0.5, 0.5)
    one_look = [sequential_sample_ratio(counts=c, expected_shares=shares) for c in looks]
    by_hand = [min(1.0, math.exp(-r.log_bayes_factor)) for r in one_look]
    result = sequential_sample_ratio_looks(counts_per_look=looks, expected_shares=shares, threshold=0.05)
    assert result.p_value == min(by_hand) and result.p_value < by_hand[-1]  # the last look alone looks fine
    assert result.looks == 4
    assert result.first_mismatch_look == next(i for i, p in enumerate(by_hand) if p < 0.05)
    assert result.mismatch and result.counts == (2_000, 2_000)


def test_sequential_srm_looks__no_looks__raises_naming_the_field():
    with pytest.raises(ValueError, match="counts_per_look"):
        sequential_sample_ratio_looks(counts_per_look=[], expected_shares=(0.5, 0.5))
