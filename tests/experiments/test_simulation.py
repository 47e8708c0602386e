"""Issue 20's acceptance simulation: 1,000 experiments looked at daily for 28 days.

A/A: the always-valid interval keeps its false-positive rate at or below 5 % however often it is
read; the fixed-horizon test read daily does not. A/B with a planted lift: both find it, the
always-valid one less often (the price of being allowed to peek). Fixed seeds, so the figures are
the same on every run; bench/peeking.py prints them too.
"""

from __future__ import annotations

import pytest

from experiments.simulation import peeking_simulation, sample_ratio_peeking_simulation


@pytest.mark.parametrize(
    ("metric", "revenue_sigma"), [("conversion", None), ("revenue per user, heavy-tailed (lognormal sigma 2)", 2.0)]
)
def test_aa__always_valid_stays_under_5_percent_while_daily_fixed_horizon_peeking_does_not(metric, revenue_sigma):
    result = peeking_simulation(experiments=1000, days=28, relative_lift=0.0, revenue_sigma=revenue_sigma)
    print(
        f"\nA/A {metric}, 1,000 experiments x 28 daily looks: always-valid {result.always_valid:.1%}, "
        f"fixed horizon peeking daily {result.fixed_horizon_peeking:.1%}, "
        f"fixed horizon read once at day 28 {result.fixed_horizon_final:.1%}"
    )
    assert result.always_valid <= 0.05
    assert result.fixed_horizon_peeking > 0.05
    assert result.fixed_horizon_peeking > 3 * result.always_valid  # the inflation is large, not noise
    assert result.always_valid_p_consistent


def test_ab__planted_lift__power_of_both_ways_of_reading():
    result = peeking_simulation(experiments=1000, days=28, relative_lift=0.10)
    print(
        f"\nA/B +10 % relative on a 5 % rate, 28,000 users per arm: power always-valid {result.always_valid:.1%}, "
        f"fixed horizon at day 28 {result.fixed_horizon_final:.1%} "
        f"(daily-peeking fixed horizon {result.fixed_horizon_peeking:.1%}, not a valid power: see A/A)"
    )
    assert result.fixed_horizon_final > 0.6
    assert result.always_valid > 0.3
    assert result.always_valid < result.fixed_horizon_final  # what peeking safely costs
    assert result.always_valid_p_consistent


def test_sample_ratio__sequential_check_read_daily__false_alarms_under_5_percent_and_catches_a_49_51_split():
    fair = sample_ratio_peeking_simulation(treatment_share=0.5, threshold=0.05)
    broken = sample_ratio_peeking_simulation(treatment_share=0.49, threshold=0.001)
    print(
        f"\nSRM read daily: fair split false alarms sequential {fair.sequential:.1%} vs chi-square "
        f"{fair.chi_square_peeking:.1%} (at 0.05); 49/51 split caught at p < 0.001 sequential "
        f"{broken.sequential:.1%}, chi-square {broken.chi_square_peeking:.1%}"
    )
    assert fair.sequential <= 0.05
    assert fair.chi_square_peeking > 0.05
    assert broken.sequential > 0.5
