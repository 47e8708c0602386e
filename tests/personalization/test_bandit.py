import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as scipy_stats

from personalization.experiences.thompson import (
    ArmStats,
    allocation_weights,
    apply_floor,
    beta_params,
    estimate_prior_strength,
    pooled_segment_params,
    prob_best,
    prob_best_from_params,
    segment_allocation_weights,
)


def arms_at(exposures: int, *rates: float) -> list[ArmStats]:
    return [ArmStats(exposures=exposures, conversions=round(exposures * rate)) for rate in rates]


def test_arm_stats__more_conversions_than_exposures__raises():
    with pytest.raises(ValueError, match="conversions=5"):
        ArmStats(exposures=4, conversions=5)


def test_prob_best__two_arms__matches_numerical_integral():
    arms = [ArmStats(1000, 40), ArmStats(1000, 48)]
    (alpha_a, alpha_b), (beta_a, beta_b) = beta_params(arms)
    # P(B > A) = integral of density_B(x) * cdf_A(x) over [0, 1].
    exact, _ = integrate.quad(
        lambda x: scipy_stats.beta.pdf(x, alpha_b, beta_b) * scipy_stats.beta.cdf(x, alpha_a, beta_a),
        0,
        1,
        points=[0.04, 0.048],
    )
    draws = 200_000

    estimate = prob_best(arms, draws=draws, rng=1)

    assert estimate[1] == pytest.approx(exact, abs=5 * math.sqrt(exact * (1 - exact) / draws))
    assert estimate.sum() == pytest.approx(1.0)


def test_prob_best__same_seed__same_result():
    arms = arms_at(500, 0.03, 0.04, 0.05)

    assert np.array_equal(prob_best(arms, rng=7), prob_best(arms, rng=7))


def test_prob_best_from_params__mismatched_lengths__raises():
    with pytest.raises(ValueError, match="equal-length"):
        prob_best_from_params(np.ones(2), np.ones(3))


def test_allocation_weights__in_burn_in__uniform():
    arms = [ArmStats(5_000, 500), ArmStats(99, 0), ArmStats(5_000, 10)]

    assert allocation_weights(arms, burn_in=100) == [1 / 3] * 3


def test_allocation_weights__clear_winner__gets_nearly_all_but_the_floors():
    weights = allocation_weights(arms_at(5_000, 0.03, 0.03, 0.06), floor=0.05, rng=3)

    assert weights == pytest.approx([0.05, 0.05, 0.90], abs=1e-9)


def test_allocation_weights__any_data__every_arm_at_least_floor_and_sum_one():
    arms = arms_at(20_000, 0.030, 0.034, 0.040, 0.045)

    weights = allocation_weights(arms, floor=0.05, rng=0)

    assert min(weights) >= 0.05
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)
    assert weights[3] == max(weights)


@pytest.mark.parametrize("floor", [-0.01, 0.34])
def test_allocation_weights__floor_out_of_range__raises(floor):
    with pytest.raises(ValueError, match="floor"):
        allocation_weights(arms_at(1_000, 0.1, 0.2, 0.3), floor=floor)


@given(
    probabilities=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10).filter(lambda p: sum(p) > 0),
    share_of_max=st.floats(0.0, 1.0),
)
def test_apply_floor__any_probabilities__each_at_least_floor_sum_one_order_kept(probabilities, share_of_max):
    floor = share_of_max / len(probabilities)

    weights = apply_floor(probabilities, floor)

    assert min(weights) >= floor
    assert math.fsum(weights) == pytest.approx(1.0, abs=1e-9)
    order = np.argsort(probabilities, kind="stable")
    assert all(np.diff(np.array(weights)[order]) >= -1e-12)


def test_apply_floor__all_above_floor__unchanged():
    assert apply_floor([0.2, 0.3, 0.5], 0.1) == pytest.approx([0.2, 0.3, 0.5])


def test_pooled_segment_params__empty_segment_small_global__equals_global_posterior():
    global_ = [ArmStats(150, 6), ArmStats(150, 9)]
    empty = [ArmStats(0, 0), ArmStats(0, 0)]

    alpha, beta = pooled_segment_params(empty, global_, prior_strength=200)

    expected_alpha, expected_beta = beta_params(global_)
    assert alpha == pytest.approx(expected_alpha)
    assert beta == pytest.approx(expected_beta)


@pytest.mark.parametrize(("prior_strength", "expected_source"), [(0.0, "segment"), (math.inf, "global")])
def test_pooled_segment_params__extreme_strength__independent_or_global(prior_strength, expected_source):
    segment = [ArmStats(300, 30), ArmStats(300, 9)]
    global_ = [ArmStats(10_000, 400), ArmStats(10_000, 500)]

    alpha, beta = pooled_segment_params(segment, global_, prior_strength=prior_strength)

    expected_alpha, expected_beta = beta_params(segment if expected_source == "segment" else global_)
    assert alpha == pytest.approx(expected_alpha)
    assert beta == pytest.approx(expected_beta)


def test_pooled_segment_params__arm_count_mismatch__raises():
    with pytest.raises(ValueError, match="same arms"):
        pooled_segment_params([ArmStats(1, 0)], [ArmStats(1, 0), ArmStats(1, 0)], prior_strength=10)


def test_segment_allocation__tiny_segment__follows_global_weights():
    big = arms_at(20_000, 0.030, 0.034, 0.040, 0.045)
    tiny = [ArmStats(5, 1), ArmStats(5, 0), ArmStats(5, 0), ArmStats(5, 0)]  # noise against the global winner
    global_ = [
        ArmStats(b.exposures + t.exposures, b.conversions + t.conversions) for b, t in zip(big, tiny, strict=True)
    ]

    weights = segment_allocation_weights({"big": big, "tiny": tiny}, global_, floor=0.01, rng=5)

    assert weights["tiny"] == pytest.approx(allocation_weights(global_, floor=0.01, rng=6), abs=0.03)


def test_segment_allocation__huge_segment__follows_its_own_data():
    huge = arms_at(100_000, 0.05, 0.03)
    others = arms_at(1_000_000, 0.03, 0.05)
    global_ = [
        ArmStats(h.exposures + o.exposures, h.conversions + o.conversions) for h, o in zip(huge, others, strict=True)
    ]

    weights = segment_allocation_weights({"huge": huge, "others": others}, global_, floor=0.01, rng=2)

    assert weights["huge"] == pytest.approx([0.99, 0.01])
    assert weights["others"] == pytest.approx([0.01, 0.99])


def test_segment_allocation__fixed_strength_small_segment__takes_global_winner_over_own_noise():
    global_ = arms_at(50_000, 0.03, 0.06)
    segment = [ArmStats(10, 2), ArmStats(10, 0)]

    weights = segment_allocation_weights({"s": segment}, global_, floor=0.0, prior_strength=200, rng=4)

    assert weights["s"][1] > 0.7


def test_segment_allocation__global_in_burn_in__all_uniform():
    global_ = [ArmStats(1_000, 50), ArmStats(99, 5)]

    weights = segment_allocation_weights({"a": global_, "b": [ArmStats(0, 0)] * 2}, global_)

    assert weights == {"a": [0.5, 0.5], "b": [0.5, 0.5]}


def test_segment_allocation__segment_without_data_after_global_burn_in__gets_pooled_weights():
    global_ = arms_at(20_000, 0.03, 0.06)

    weights = segment_allocation_weights({"new": [ArmStats(0, 0)] * 2}, global_, floor=0.05, rng=1)

    assert weights["new"] == pytest.approx([0.05, 0.95])


def test_estimate_prior_strength__identical_rates__full_pooling():
    segments = [arms_at(n, 0.03, 0.05) for n in (1_000, 5_000, 20_000)]

    assert estimate_prior_strength(segments) == math.inf


def test_estimate_prior_strength__no_conversions__full_pooling():
    assert estimate_prior_strength([[ArmStats(100, 0)], [ArmStats(50, 0)]]) == math.inf


def test_estimate_prior_strength__simulated_segments__recovers_true_strength():
    rng = np.random.default_rng(11)
    true_strength, mean = 500.0, 0.04
    rates = rng.beta(mean * true_strength, (1 - mean) * true_strength, size=(300, 2))
    exposures = rng.integers(5_000, 50_000, size=(300, 2))
    conversions = rng.binomial(exposures, rates)
    segments = [
        [ArmStats(int(n), int(c)) for n, c in zip(ns, cs, strict=True)]
        for ns, cs in zip(exposures, conversions, strict=True)
    ]

    assert 0.7 * true_strength < estimate_prior_strength(segments) < 1.4 * true_strength


@pytest.mark.parametrize("probabilities", [[0.0, 0.0], [1.2, -0.2]])
def test_apply_floor__no_positive_mass_or_negative__raises(probabilities):
    with pytest.raises(ValueError, match="non-negative"):
        apply_floor(probabilities, 0.1)
