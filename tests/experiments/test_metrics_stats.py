"""experiments.metrics_stats against references computed on the raw per-user arrays.

The code under test only sees GROUP BY sums (`Moments`); every reference below uses the per-user
values (numpy, scipy.stats.mstats.winsorize, statsmodels OLS), compared to 1e-9. Two tests run the
documented SQL on the real embedded PostgreSQL, so the recipe the report layer copies is checked too.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
import statsmodels.api as sm
from django.db import connection
from scipy import stats as sps
from scipy.stats import mstats

from experiments.metrics_stats import Moments, compare_metric, cuped_compare, linearise, winsor_cap
from experiments.stats import ArmStats, compare_cuped

TOL = 1e-9
Z95 = sps.norm.ppf(0.975)


def close(actual: float, expected: float, tol: float = TOL) -> bool:
    return math.isclose(actual, expected, rel_tol=tol, abs_tol=tol)


def sessions_and_revenue(rng: np.random.Generator, n: int, revenue_per_session: float) -> np.ndarray:
    """Per-user (revenue, sessions, pre-period revenue, pre-period sessions), correlated like a shop's."""
    activity, propensity = rng.gamma(2.0, 1.0, n), rng.beta(0.5, 1.5, n)
    basket = rng.gamma(3.0, revenue_per_session / 3.0, n)  # a user's typical spend, before and during
    sessions, pre_sessions = rng.poisson(1 + 2 * activity), rng.poisson(1 + 2 * activity)
    revenue = basket * rng.binomial(sessions, propensity) * rng.gamma(5.0, 0.2, n)
    pre_revenue = basket * rng.binomial(pre_sessions, propensity) * rng.gamma(5.0, 0.2, n)
    return np.column_stack([revenue, sessions, pre_revenue, pre_sessions]).astype(float)


RNG = np.random.default_rng(20)
USERS_T = sessions_and_revenue(RNG, 4000, 11.0)
USERS_C = sessions_and_revenue(RNG, 1500, 10.0)
ARM_T, ARM_C = Moments.from_values(USERS_T), Moments.from_values(USERS_C)


def linearised_ratio(users: np.ndarray, num: int, den: int) -> tuple[float, np.ndarray]:
    """Ratio of means and each user's delta-method contribution (num - r den) / mean den."""
    ratio = users[:, num].mean() / users[:, den].mean()
    return ratio, (users[:, num] - ratio * users[:, den]) / users[:, den].mean()


# --- ratio metrics -----------------------------------------------------------------------------


def test_ratio__delta_method_variance__matches_textbook_formula_on_raw_arrays():
    y, x = USERS_T[:, 0], USERS_T[:, 1]
    n, mu_y, mu_x = len(y), y.mean(), x.mean()
    cov = np.cov(y, x, ddof=1)
    expected = (cov[0, 0] / mu_x**2 - 2 * mu_y * cov[0, 1] / mu_x**3 + mu_y**2 * cov[1, 1] / mu_x**4) / n
    result = compare_metric(treatment=ARM_T, holdout=ARM_C, metric=(0, 1))
    assert close(result.value_treatment, y.sum() / x.sum())
    assert close(result.variance_treatment, expected)
    _, contribution = linearised_ratio(USERS_T, 0, 1)
    assert close(result.variance_treatment, contribution.var(ddof=1) / n)


def test_ratio__difference_and_relative_lift__intervals_match_hand_formula():
    r_t, lin_t = linearised_ratio(USERS_T, 0, 1)
    r_c, lin_c = linearised_ratio(USERS_C, 0, 1)
    v_t, v_c = lin_t.var(ddof=1) / len(lin_t), lin_c.var(ddof=1) / len(lin_c)
    se = math.sqrt(v_t + v_c)
    result = compare_metric(treatment=ARM_T, holdout=ARM_C, metric=(0, 1))
    assert close(result.difference.value, r_t - r_c)
    assert close(result.difference.ci_low, r_t - r_c - Z95 * se)
    assert close(result.difference.ci_high, r_t - r_c + Z95 * se)
    assert close(result.p_value, 2 * sps.norm.sf(abs(r_t - r_c) / se))
    relative_se = math.sqrt(v_t / r_c**2 + r_t**2 * v_c / r_c**4)
    assert close(result.relative_lift.value, r_t / r_c - 1)
    assert close(result.relative_lift.std_error, relative_se)
    assert close(result.relative_lift.ci_high, r_t / r_c - 1 + Z95 * relative_se)


def test_mean_and_count_metrics__variance_is_the_sample_variance_over_n():
    result = compare_metric(treatment=ARM_T, holdout=ARM_C, metric=(1,), alpha=0.1)
    sessions_t, sessions_c = USERS_T[:, 1], USERS_C[:, 1]
    assert close(result.variance_treatment, sessions_t.var(ddof=1) / len(sessions_t))
    se = math.sqrt(sessions_t.var(ddof=1) / len(sessions_t) + sessions_c.var(ddof=1) / len(sessions_c))
    assert close(result.difference.ci_low, sessions_t.mean() - sessions_c.mean() - sps.norm.ppf(0.95) * se)


def test_ratio__zero_denominator_or_one_user__is_nan_not_an_error():
    empty = Moments.from_values(np.array([[5.0, 0.0], [3.0, 0.0]]))
    result = compare_metric(treatment=empty, holdout=Moments.from_values(USERS_C[:, :2]), metric=(0, 1))
    assert math.isnan(result.value_treatment) and math.isnan(result.p_value)
    single = compare_metric(treatment=Moments.from_values(USERS_T[:1, :2]), holdout=ARM_C, metric=(0,))
    assert math.isnan(single.variance_treatment) and math.isnan(single.difference.ci_low)
    zero_holdout = compare_metric(treatment=ARM_T, holdout=Moments.from_values(np.zeros((3, 4))), metric=(0,))
    assert math.isnan(zero_holdout.relative_lift.value) and not math.isnan(zero_holdout.difference.value)


@pytest.mark.parametrize("metric", [(4,), (0, 9), (0, 1, 2), ()])
def test_compare_metric__bad_column__raises_naming_the_field(metric):
    with pytest.raises(ValueError, match="metric must be"):
        compare_metric(treatment=ARM_T, holdout=ARM_C, metric=metric)


def test_moments__malformed_rows__raise_clear_errors_and_decimals_become_floats():
    with pytest.raises(ValueError, match="cannot be negative"):
        Moments(-1, (1.0,), ((1.0,),))
    with pytest.raises(ValueError, match="2 x 2 matrix"):
        Moments(3, (1.0, 2.0), ((1.0, 2.0),))
    with pytest.raises(ValueError, match="sums of squares"):
        Moments(3, (1.0,), ((-1.0,),))
    row = Moments(2, (Decimal("3.5"),), ((Decimal("6.25"),),))
    assert isinstance(row.sums[0], float) and row.means()[0] == 1.75


def test_moments__added_arms__equal_the_moments_of_the_pooled_users():
    pooled = Moments.from_values(np.vstack([USERS_T, USERS_C]))
    added = ARM_T + ARM_C
    assert added.n == pooled.n
    assert np.allclose(added.products, pooled.products, rtol=TOL, atol=0)


# --- capped (winsorized) revenue ---------------------------------------------------------------

REVENUE = np.concatenate([USERS_T[:, 0], USERS_C[:, 0]])


def test_winsorized_mean__cap_on_an_order_statistic__matches_mstats_winsorize():
    values = REVENUE[:1001]  # 0.99 * (1001 - 1) = 990: percentile_cont lands on one order statistic
    cap = winsor_cap(values=values, percentile=0.99)
    reference = mstats.winsorize(values, limits=(0, 0.01))
    capped = Moments.from_values(np.minimum(values, cap))
    assert close(capped.means()[0], float(reference.mean()))
    assert close(cap, float(reference.max()))


def test_winsorized_comparison__cap_between_order_statistics__matches_capped_arrays():
    cap = winsor_cap(values=REVENUE, percentile=0.95)
    assert close(cap, float(np.percentile(REVENUE, 95)))
    capped_t, capped_c = np.minimum(USERS_T[:, 0], cap), np.minimum(USERS_C[:, 0], cap)
    result = compare_metric(treatment=Moments.from_values(capped_t), holdout=Moments.from_values(capped_c), metric=(0,))
    assert close(result.value_treatment, capped_t.mean())
    se = math.sqrt(capped_t.var(ddof=1) / len(capped_t) + capped_c.var(ddof=1) / len(capped_c))
    assert close(result.difference.std_error, se)
    raw = compare_metric(treatment=ARM_T, holdout=ARM_C, metric=(0,))
    assert result.difference.std_error < raw.difference.std_error  # capping is what tames the variance


@pytest.mark.parametrize("percentile", [0, 1.5, -0.1])
def test_winsor_cap__percentile_outside_0_1__raises_naming_the_field(percentile):
    with pytest.raises(ValueError, match="percentile must be"):
        winsor_cap(values=REVENUE, percentile=percentile)


@pytest.mark.django_db
def test_winsorized__documented_sql_on_postgres__gives_the_same_cap_and_moments():
    arm = np.r_[np.zeros(len(USERS_T), dtype=int), np.ones(len(USERS_C), dtype=int)]
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH users AS (SELECT * FROM unnest(%s::float8[], %s::int[]) AS u(revenue, arm)),"
            " cap AS (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY revenue) AS cap FROM users)"
            " SELECT arm, cap.cap, COUNT(*), SUM(LEAST(revenue, cap.cap)), SUM(LEAST(revenue, cap.cap) ^ 2)"
            " FROM users, cap GROUP BY arm, cap.cap ORDER BY arm",
            [REVENUE.tolist(), arm.tolist()],
        )
        rows = cursor.fetchall()
    cap = winsor_cap(values=REVENUE, percentile=0.95)
    assert close(rows[0][1], cap)
    from_sql = Moments(rows[0][2], (rows[0][3],), ((rows[0][4],),))
    assert close(from_sql.means()[0], np.minimum(USERS_T[:, 0], cap).mean())


# --- CUPED / CUPAC ------------------------------------------------------------------------------


def ols_reference(y_t: np.ndarray, y_c: np.ndarray, x_t: np.ndarray, x_c: np.ndarray):
    """statsmodels OLS y ~ 1 + treat + (x - mean x), classic (non-robust) standard errors."""
    y, x = np.r_[y_t, y_c], np.r_[x_t, x_c]
    treat = np.r_[np.ones(len(y_t)), np.zeros(len(y_c))]
    design = np.column_stack([np.ones(len(y)), treat, x - x.mean()])
    return sm.OLS(y, design).fit()


@pytest.mark.parametrize(("label", "y", "x"), [("revenue per user", 0, 2), ("sessions per user (count)", 1, 3)])
def test_cuped__mean_metric__coefficient_and_classic_se_match_statsmodels_ols(label, y, x):
    fit = ols_reference(USERS_T[:, y], USERS_C[:, y], USERS_T[:, x], USERS_C[:, x])
    result = cuped_compare(treatment=ARM_T, holdout=ARM_C, metric=(y,), covariate=(x,))
    assert close(result.difference.value, fit.params[1]), label
    assert close(result.theta, fit.params[2]), label
    assert close(result.ols_std_error, fit.bse[1]), label


def test_cuped__mean_metric__variances_and_reduction_match_adjusted_per_user_values():
    result = cuped_compare(treatment=ARM_T, holdout=ARM_C, metric=(0,), covariate=(2,))
    x_mean = np.r_[USERS_T[:, 2], USERS_C[:, 2]].mean()
    adj_t = USERS_T[:, 0] - result.theta * (USERS_T[:, 2] - x_mean)
    adj_c = USERS_C[:, 0] - result.theta * (USERS_C[:, 2] - x_mean)
    variance_adjusted = adj_t.var(ddof=1) / len(adj_t) + adj_c.var(ddof=1) / len(adj_c)
    variance_raw = USERS_T[:, 0].var(ddof=1) / len(adj_t) + USERS_C[:, 0].var(ddof=1) / len(adj_c)
    assert close(result.adjusted_treatment, adj_t.mean())
    assert close(result.variance_adjusted, variance_adjusted)
    assert close(result.difference.std_error, math.sqrt(variance_adjusted))
    assert close(result.variance_reduction, 1 - variance_adjusted / variance_raw)
    assert result.variance_reduction > 0.05  # the pre-period really predicts revenue in this data


def test_cuped__mean_metric__agrees_with_existing_compare_cuped():
    result = cuped_compare(treatment=ARM_T, holdout=ARM_C, metric=(0,), covariate=(2,))
    existing = compare_cuped(
        **{
            name: ArmStats(
                n=len(users),
                conversions=int((users[:, 0] > 0).sum()),
                sum_y=users[:, 0].sum(),
                sum_y2=(users[:, 0] ** 2).sum(),
                sum_x=users[:, 2].sum(),
                sum_x2=(users[:, 2] ** 2).sum(),
                sum_xy=(users[:, 0] * users[:, 2]).sum(),
            )
            for name, users in (("treatment", USERS_T), ("holdout", USERS_C))
        }
    )
    assert close(result.theta, existing.theta)
    assert close(result.difference.value, existing.difference.value)
    assert close(result.variance_reduction, existing.variance_reduction)


def test_cuped__ratio_metric__matches_hand_linearisation_on_raw_arrays():
    result = cuped_compare(treatment=ARM_T, holdout=ARM_C, metric=(0, 1), covariate=(2, 3))
    (r_t, ly_t), (r_c, ly_c) = linearised_ratio(USERS_T, 0, 1), linearised_ratio(USERS_C, 0, 1)
    (x_t, lx_t), (x_c, lx_c) = linearised_ratio(USERS_T, 2, 3), linearised_ratio(USERS_C, 2, 3)
    centred = [(ly - ly.mean(), lx - lx.mean()) for ly, lx in ((ly_t, lx_t), (ly_c, lx_c))]
    theta = sum((a * b).sum() for a, b in centred) / sum((b * b).sum() for _, b in centred)
    x_all = np.r_[USERS_T[:, 2], USERS_C[:, 2]].sum() / np.r_[USERS_T[:, 3], USERS_C[:, 3]].sum()
    adjusted_difference = (r_t - theta * (x_t - x_all)) - (r_c - theta * (x_c - x_all))
    variance = sum((ly - theta * lx).var(ddof=1) / len(ly) for ly, lx in ((ly_t, lx_t), (ly_c, lx_c)))
    variance_raw = ly_t.var(ddof=1) / len(ly_t) + ly_c.var(ddof=1) / len(ly_c)
    assert close(result.theta, theta)
    assert close(result.difference.value, adjusted_difference)
    assert close(result.variance_adjusted, variance)
    assert close(result.variance_reduction, 1 - variance / variance_raw)
    assert close(result.difference.ci_low, adjusted_difference - Z95 * math.sqrt(variance))


def test_cupac__predicted_covariate__same_code_and_ols_reference():
    rng = np.random.default_rng(7)
    # A predictive score: the pre-period revenue blended with sessions and noise, as a model would give.
    predicted_t = 0.6 * USERS_T[:, 2] + 3 * USERS_T[:, 3] + rng.normal(0, 5, len(USERS_T))
    predicted_c = 0.6 * USERS_C[:, 2] + 3 * USERS_C[:, 3] + rng.normal(0, 5, len(USERS_C))
    arm_t = Moments.from_values(np.column_stack([USERS_T[:, 0], predicted_t]))
    arm_c = Moments.from_values(np.column_stack([USERS_C[:, 0], predicted_c]))
    result = cuped_compare(treatment=arm_t, holdout=arm_c, metric=(0,), covariate=(1,))
    fit = ols_reference(USERS_T[:, 0], USERS_C[:, 0], predicted_t, predicted_c)
    assert close(result.difference.value, fit.params[1])
    assert close(result.ols_std_error, fit.bse[1])
    assert result.variance_reduction > 0


def test_cuped__covariate_without_spread__leaves_the_metric_unadjusted():
    constant_t = Moments.from_values(np.column_stack([USERS_T[:, 0], np.full(len(USERS_T), 3.0)]))
    constant_c = Moments.from_values(np.column_stack([USERS_C[:, 0], np.full(len(USERS_C), 3.0)]))
    result = cuped_compare(treatment=constant_t, holdout=constant_c, metric=(0,), covariate=(1,))
    plain = compare_metric(treatment=constant_t, holdout=constant_c, metric=(0,))
    assert result.theta == 0.0
    assert close(result.difference.value, plain.difference.value)
    assert close(result.variance_reduction, 0.0)


def test_cuped__one_user_in_an_arm__is_nan_not_an_error():
    result = cuped_compare(treatment=Moments.from_values(USERS_T[:1]), holdout=ARM_C, metric=(0,), covariate=(2,))
    assert math.isnan(result.difference.value) and math.isnan(result.variance_reduction)


def test_cuped__bad_covariate_column__raises_naming_the_field():
    with pytest.raises(ValueError, match="covariate must be"):
        cuped_compare(treatment=ARM_T, holdout=ARM_C, metric=(0,), covariate=(7,))


def test_linearise__ratio_gradient__is_the_derivative_of_the_ratio_of_means():
    value, gradient = linearise(moments=ARM_T, metric=(0, 1))
    means = ARM_T.means()
    step = 1e-6 * means[1]
    numeric = ((means[0]) / (means[1] + step) - (means[0]) / (means[1] - step)) / (2 * step)
    assert close(value, means[0] / means[1])
    assert math.isclose(gradient[1], numeric, rel_tol=1e-6)
    assert gradient[2] == gradient[3] == 0
