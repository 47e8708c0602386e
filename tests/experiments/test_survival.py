"""experiments.survival (Kaplan-Meier from per-time counts) against statsmodels SurvfuncRight on raw data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.duration.survfunc import SurvfuncRight

from experiments.survival import kaplan_meier, median_interval

TOL = 1e-9


def counts_per_time(time: np.ndarray, converted: np.ndarray) -> dict[str, list]:
    """What the documented GROUP BY returns: one row per distinct time with events and censored."""
    times = np.unique(time)
    return {
        "times": times.tolist(),
        "events": [int(converted[time == t].sum()) for t in times],
        "censored": [int((~converted[time == t]).sum()) for t in times],
    }


def conversion_data(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Days to conversion (whole days, so many ties), censored by a staggered entry into the test."""
    rng = np.random.default_rng(seed)
    will_convert = rng.random(n) < 0.7
    conversion_day = np.ceil(rng.exponential(9.0, n))
    watched = rng.integers(1, 40, n)  # days since first exposure at the time of the report
    converted = will_convert & (conversion_day <= watched)
    return np.where(converted, conversion_day, watched).astype(float), converted


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kaplan_meier__curve_greenwood_and_median__match_survfunc_right(seed):
    time, converted = conversion_data(seed)
    curve = kaplan_meier(**counts_per_time(time, converted))
    reference = SurvfuncRight(time, converted.astype(int))
    assert np.array_equal(curve.times, reference.surv_times)
    assert np.array_equal(curve.at_risk, reference.n_risk)
    np.testing.assert_allclose(curve.survival, reference.surv_prob, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(curve.greenwood_variance, reference.surv_prob_se**2, rtol=TOL, atol=TOL)
    assert not any(s == 0.5 for s in curve.survival)  # where the two median conventions agree
    assert curve.median == reference.quantile(0.5)


def test_kaplan_meier__hand_computed_example_with_ties_and_censoring():
    # 6 people: converted at 2, 2, 5; censored at 2 (still at risk at 2), 4 and 7.
    curve = kaplan_meier(times=[7, 2, 4, 5], events=[0, 2, 0, 1], censored=[1, 1, 1, 0])
    assert curve.times == (2.0, 5.0)
    assert curve.at_risk == (6, 2)
    s2, s5 = 1 - 2 / 6, (1 - 2 / 6) * (1 - 1 / 2)
    assert math.isclose(curve.survival[0], s2, rel_tol=TOL) and math.isclose(curve.survival[1], s5, rel_tol=TOL)
    greenwood5 = s5**2 * (2 / (6 * 4) + 1 / (2 * 1))
    assert math.isclose(curve.greenwood_variance[1], greenwood5, rel_tol=TOL)
    assert curve.median == 5.0
    assert curve.conversion_by(1) == 0.0 and math.isclose(curve.conversion_by(4.5), 1 - s2, rel_tol=TOL)


def test_kaplan_meier__curve_exactly_at_half__median_is_that_time_not_the_next():
    # S = 0.75, 0.5, 0.25, 0: the median is 2 (S <= 0.5); statsmodels' SAS-style S < 0.5 says 3.
    curve = kaplan_meier(times=[1, 2, 3, 4], events=[1, 1, 1, 1], censored=[0, 0, 0, 0])
    assert curve.median == 2.0
    assert SurvfuncRight(np.array([1.0, 2, 3, 4]), np.ones(4)).quantile(0.5) == 3.0
    assert curve.survival[-1] == 0.0 and math.isnan(curve.greenwood_variance[-1])


def test_kaplan_meier__fewer_than_half_converted__median_not_reached_is_nan():
    curve = kaplan_meier(times=[1, 3, 10], events=[1, 1, 0], censored=[0, 5, 20])
    assert math.isnan(curve.median)
    empty = kaplan_meier(times=[4], events=[0], censored=[9])
    assert empty.times == () and math.isnan(empty.median) and empty.conversion_by(10) == 0.0


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"times": [1, 2], "events": [1], "censored": [0, 0]}, "same length"),
        ({"times": [1, 1], "events": [1, 1], "censored": [0, 0]}, "distinct"),
        ({"times": [1, 2], "events": [1, -1], "censored": [0, 0]}, "cannot be negative"),
    ],
)
def test_kaplan_meier__malformed_counts__raise_naming_the_fix(counts, message):
    with pytest.raises(ValueError, match=message):
        kaplan_meier(**counts)


@pytest.mark.parametrize(("seed", "n"), [(1, 3000), (4, 300), (5, 60)])
def test_median_interval__matches_survfunc_right_quantile_ci(seed, n):
    time, converted = conversion_data(seed, n)
    curve = kaplan_meier(**counts_per_time(time, converted))
    expected = SurvfuncRight(time, converted.astype(int)).quantile_ci(0.5)
    assert median_interval(curve) == pytest.approx(expected, nan_ok=True)
    assert median_interval(curve)[0] <= curve.median <= median_interval(curve)[1]


def test_median_interval__band_not_below_half_yet__upper_limit_is_inf():
    # 40 people, 5 convert on each of days 1-4 and 1 on day 5, 19 still waiting: S ends at 0.475.
    curve = kaplan_meier(times=[1, 2, 3, 4, 5], events=[5, 5, 5, 5, 1], censored=[0, 0, 0, 0, 19])
    time = np.repeat([1.0, 2, 3, 4, 5, 5], [5, 5, 5, 5, 1, 19])
    expected = SurvfuncRight(time, (np.arange(40) < 21).astype(int)).quantile_ci(0.5)
    low, high = median_interval(curve)
    assert curve.median == 4 and math.isfinite(low) and high == math.inf
    assert (low, high) == pytest.approx(expected)
