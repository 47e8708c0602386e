"""experiments.stats, experiments.decomposition and experiments.sentences against scipy / statsmodels references.

Pure arithmetic on aggregates: no database. Reference values come from independent code paths
(per-user arrays, statsmodels, scipy) on fixed data, compared to 1e-9 unless noted.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special
from scipy import stats as sps
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments.decomposition import decompose_lift
from experiments.sentences import summary_sentences
from experiments.stats import (
    ArmStats,
    SegmentStats,
    adjust_p_values,
    check_sample_ratio,
    cochran_q,
    compare_cuped,
    compare_means,
    compare_rates,
    lift_report,
    prob_beta_greater,
)

TOL = 1e-9
Z95 = sps.norm.ppf(0.975)


def close(actual: float, expected: float, tol: float = TOL) -> bool:
    return math.isclose(actual, expected, rel_tol=tol, abs_tol=tol)


def arm_from_users(converted: np.ndarray, revenue: np.ndarray, pre: np.ndarray | None = None) -> ArmStats:
    """Aggregate per-user arrays exactly as the GROUP BY would."""
    covariate = {}
    if pre is not None:
        covariate = {"sum_x": pre.sum(), "sum_x2": (pre**2).sum(), "sum_xy": (pre * revenue).sum()}
    return ArmStats(
        n=len(converted),
        conversions=int(converted.sum()),
        sum_y=revenue.sum(),
        sum_y2=(revenue**2).sum(),
        **covariate,
    )


def binary_arm(n: int, conversions: int, revenue_per_conversion: float = 40.0) -> ArmStats:
    revenue = conversions * revenue_per_conversion
    return ArmStats(n=n, conversions=conversions, sum_y=revenue, sum_y2=revenue * revenue_per_conversion)


def exact_prob_greater(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X1 > X2) by Evan Miller's exact finite sum (integer a1), an independent reference."""
    i = np.arange(a1)
    log_terms = special.betaln(a2 + i, b1 + b2) - np.log(b1 + i) - special.betaln(1 + i, b1) - special.betaln(a2, b2)
    return float(np.exp(log_terms).sum())


TREATMENT = ArmStats(n=12_000, conversions=540)
HOLDOUT = ArmStats(n=3_000, conversions=117)


# --- binary goal -------------------------------------------------------------------------------


def test_absolute_lift__wald__matches_confint_proportions_2indep():
    result = compare_rates(treatment=TREATMENT, holdout=HOLDOUT)
    low, high = confint_proportions_2indep(540, 12_000, 117, 3_000, method="wald", compare="diff")

    assert close(result.rate_treatment, 0.045) and close(result.rate_holdout, 0.039)
    assert close(result.absolute_lift.value, 0.045 - 0.039)
    assert close(result.absolute_lift.ci_low, low)
    assert close(result.absolute_lift.ci_high, high)


def test_absolute_lift__other_alpha__uses_matching_critical_value():
    result = compare_rates(treatment=TREATMENT, holdout=HOLDOUT, alpha=0.1)
    low, high = confint_proportions_2indep(540, 12_000, 117, 3_000, method="wald", compare="diff", alpha=0.1)

    assert close(result.absolute_lift.ci_low, low) and close(result.absolute_lift.ci_high, high)


def test_relative_lift__delta_method__matches_reference():
    result = compare_rates(treatment=TREATMENT, holdout=HOLDOUT)
    ratio_low, ratio_high = confint_proportions_2indep(540, 12_000, 117, 3_000, method="log", compare="ratio")
    p_t, p_c = 540 / 12_000, 117 / 3_000
    var_t, var_c = p_t * (1 - p_t) / 12_000, p_c * (1 - p_c) / 3_000
    # Delta method by hand: gradient of p_t / p_c, and of log(p_t / p_c) for the interval.
    gradient = np.array([1 / p_c, -p_t / p_c**2])
    linear_se = math.sqrt(gradient @ np.diag([var_t, var_c]) @ gradient)
    log_half_width = Z95 * math.sqrt(var_t / p_t**2 + var_c / p_c**2)

    assert close(result.relative_lift.value, p_t / p_c - 1)
    assert close(result.relative_lift.ci_low, ratio_low - 1)
    assert close(result.relative_lift.ci_high, ratio_high - 1)
    assert close(result.relative_lift.ci_low, math.exp(math.log(p_t / p_c) - log_half_width) - 1)
    assert close(result.relative_lift.std_error, linear_se)


def test_p_value__pooled_two_proportion_z_test__matches_proportions_ztest():
    for treatment, holdout in [
        (TREATMENT, HOLDOUT),
        (ArmStats(n=500, conversions=3), ArmStats(n=90, conversions=4)),
    ]:
        result = compare_rates(treatment=treatment, holdout=holdout)
        _, expected = proportions_ztest([treatment.conversions, holdout.conversions], [treatment.n, holdout.n])

        assert close(result.p_value, expected)


@pytest.mark.parametrize(
    ("treatment", "holdout"),
    [
        ((40, 1_000), (55, 1_000)),
        ((4_000, 100_000), (4_150, 100_000)),
        ((0, 1_000), (3, 1_000)),
        ((300, 1_000), (10, 100)),
        ((3, 13), (30_000, 100_000)),
        ((1, 10_000), (5, 5_000)),
    ],
)
def test_prob_treatment_better__matches_exact_beta_sum(treatment, holdout):
    (c_t, n_t), (c_c, n_c) = treatment, holdout
    result = compare_rates(treatment=ArmStats(n=n_t, conversions=c_t), holdout=ArmStats(n=n_c, conversions=c_c))

    assert close(result.prob_treatment_better, exact_prob_greater(1 + c_t, 1 + n_t - c_t, 1 + c_c, 1 + n_c - c_c))


def test_prob_beta_greater__huge_counts__matches_adaptive_quadrature_and_is_symmetric():
    a1, b1, a2, b2 = 1 + 52_000, 1 + 948_000, 1 + 51_700, 1 + 948_300
    lo, hi = 0.049, 0.054
    reference, _ = integrate.quad(
        lambda x: sps.beta.pdf(x, a2, b2) * sps.beta.sf(x, a1, b1),
        lo,
        hi,
        epsabs=1e-13,
        limit=400,
        points=np.linspace(lo, hi, 25)[1:-1],
    )

    forward = prob_beta_greater(a1=a1, b1=b1, a2=a2, b2=b2)
    assert 0.8 < forward < 0.9999
    assert close(forward, reference)
    assert close(forward + prob_beta_greater(a1=a2, b1=b2, a2=a1, b2=b1), 1.0)


# --- continuous goal ---------------------------------------------------------------------------


def revenue_users(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    treatment = rng.gamma(2.0, 12.0, 700) * (rng.random(700) < 0.3)
    holdout = rng.gamma(2.0, 10.0, 450) * (rng.random(450) < 0.28)
    return treatment, holdout


def test_compare_means__welch__matches_ttest_ind_from_stats():
    y_t, y_c = revenue_users()
    result = compare_means(treatment=arm_from_users(y_t > 0, y_t), holdout=arm_from_users(y_c > 0, y_c))
    expected = sps.ttest_ind_from_stats(
        y_t.mean(), y_t.std(ddof=1), len(y_t), y_c.mean(), y_c.std(ddof=1), len(y_c), equal_var=False
    )
    raw = sps.ttest_ind(y_t, y_c, equal_var=False)
    ci = raw.confidence_interval(0.95)

    assert close(result.difference.value, y_t.mean() - y_c.mean())
    assert close(result.difference.value / result.difference.std_error, expected.statistic)
    assert close(result.p_value, expected.pvalue)
    assert close(result.df, raw.df)
    assert close(result.difference.ci_low, ci.low) and close(result.difference.ci_high, ci.high)


def test_compare_means__one_user_in_an_arm__is_nan_not_an_error():
    result = compare_means(treatment=ArmStats(n=1, conversions=1, sum_y=5, sum_y2=25), holdout=binary_arm(10, 2))

    assert result.mean_treatment == 5
    assert math.isnan(result.p_value) and math.isnan(result.difference.ci_low)


# --- multiple testing --------------------------------------------------------------------------

P_VALUES = [0.001, 0.04, 0.03, 0.2, 0.04, 0.0004, 0.9, 0.012, 0.5, 0.049]


@pytest.mark.parametrize(("method", "reference"), [("bh", "fdr_bh"), ("holm", "holm")])
def test_adjust_p_values__matches_multipletests(method, reference):
    reject, expected, _, _ = multipletests(P_VALUES, alpha=0.05, method=reference)
    adjusted = adjust_p_values(p_values=P_VALUES, method=method)

    np.testing.assert_allclose(adjusted, expected, rtol=0, atol=1e-12)
    assert list(adjusted <= 0.05) == list(reject)


def test_adjust_p_values__nan__is_left_out_of_the_family():
    with_nan = [0.01, math.nan, 0.04, 0.03]
    _, expected, _, _ = multipletests([0.01, 0.04, 0.03], method="fdr_bh")
    adjusted = adjust_p_values(p_values=with_nan)

    assert math.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2, 3]], expected, rtol=0, atol=1e-12)


def test_adjust_p_values__unknown_method__raises_naming_the_option():
    with pytest.raises(ValueError, match="correction"):
        adjust_p_values(p_values=[0.1], method="bonferroni")  # type: ignore[arg-type]


# --- sample ratio mismatch ---------------------------------------------------------------------


def test_check_sample_ratio__matches_chisquare_and_flags_below_threshold():
    check = check_sample_ratio(name="Trail runners", users_treatment=9_100, users_holdout=900, holdout_share=0.1)
    expected = sps.chisquare([9_100, 900], f_exp=[9_000, 1_000])

    assert close(check.chi2, expected.statistic) and close(check.p_value, expected.pvalue)
    assert check.p_value < 0.001 and check.mismatch
    assert "Trail runners" in check.warning and "9.0 % holdout" in check.warning


def test_check_sample_ratio__threshold_is_configurable_and_balanced_split_passes():
    balanced = check_sample_ratio(name="All users", users_treatment=9_010, users_holdout=990, holdout_share=0.1)
    lax = check_sample_ratio(
        name="All users", users_treatment=9_100, users_holdout=900, holdout_share=0.1, threshold=1e-6
    )

    assert not balanced.mismatch and balanced.warning is None
    assert close(balanced.p_value, sps.chisquare([9_010, 990], f_exp=[9_000, 1_000]).pvalue)
    assert lax.p_value > 1e-6 and not lax.mismatch


# --- heterogeneity -----------------------------------------------------------------------------


def test_cochran_q__matches_statsmodels_combine_effects():
    effects = np.array([0.012, 0.004, -0.006, 0.009, 0.001])
    std_errors = np.array([0.003, 0.002, 0.004, 0.005, 0.0025])
    reference = combine_effects(effects, std_errors**2, method_re="chi2")
    result = cochran_q(estimates=effects, std_errors=std_errors)

    assert result.segments_used == 5 and result.df == 4
    assert close(result.q, reference.q)
    assert close(result.p_value, reference.test_homogeneity().pvalue)
    assert close(result.i_squared, max(0.0, reference.i2))
    assert close(result.pooled_effect, np.average(effects, weights=std_errors**-2))


@pytest.mark.filterwarnings("ignore:invalid value encountered in sqrt:RuntimeWarning")  # statsmodels' RE part
def test_cochran_q__less_spread_than_chance__has_i_squared_zero():
    effects, std_errors = np.array([0.010, 0.011, 0.009]), np.array([0.004, 0.005, 0.004])
    reference = combine_effects(effects, std_errors**2, method_re="chi2")
    result = cochran_q(estimates=effects, std_errors=std_errors)

    assert reference.i2 < 0 and result.i_squared == 0.0
    assert close(result.q, reference.q) and result.p_value > 0.5


def test_cochran_q__fewer_than_two_usable_segments__is_nan():
    result = cochran_q(estimates=[0.01, math.nan, 0.02], std_errors=[0.002, 0.001, 0.0])

    assert result.segments_used == 1 and math.isnan(result.q) and math.isnan(result.p_value)


# --- CUPED -------------------------------------------------------------------------------------


def cuped_users(seed: int = 11):
    rng = np.random.default_rng(seed)
    x_t, x_c = rng.gamma(2.0, 20.0, 400), rng.gamma(2.0, 20.0, 300)
    y_t = 5 + 0.8 * x_t + 3.0 + rng.normal(0, 15, 400)
    y_c = 5 + 0.8 * x_c + rng.normal(0, 15, 300)
    return x_t, y_t, x_c, y_c


def test_cuped__point_estimate__matches_ols_with_centred_covariate():
    x_t, y_t, x_c, y_c = cuped_users()
    result = compare_cuped(treatment=arm_from_users(y_t > 0, y_t, x_t), holdout=arm_from_users(y_c > 0, y_c, x_c))
    x, y = np.concatenate([x_t, x_c]), np.concatenate([y_t, y_c])
    treat = np.r_[np.ones(len(x_t)), np.zeros(len(x_c))]
    fit = sm.OLS(y, np.column_stack([np.ones_like(x), treat, x - x.mean()])).fit()

    assert close(result.difference.value, fit.params[1])
    assert close(result.theta, fit.params[2])
    assert close(result.adjusted_mean_treatment - result.adjusted_mean_holdout, fit.params[1])


def test_cuped__variances__match_per_user_computation():
    x_t, y_t, x_c, y_c = cuped_users()
    result = compare_cuped(treatment=arm_from_users(y_t > 0, y_t, x_t), holdout=arm_from_users(y_c > 0, y_c, x_c))
    within = [(x_t - x_t.mean(), y_t - y_t.mean()), (x_c - x_c.mean(), y_c - y_c.mean())]
    theta = sum(dx @ dy for dx, dy in within) / sum(dx @ dx for dx, _ in within)
    x_mean = np.concatenate([x_t, x_c]).mean()
    adj_t, adj_c = y_t - theta * (x_t - x_mean), y_c - theta * (x_c - x_mean)
    raw_variance = y_t.var(ddof=1) / 400 + y_c.var(ddof=1) / 300
    adjusted_variance = adj_t.var(ddof=1) / 400 + adj_c.var(ddof=1) / 300
    welch = sps.ttest_ind(adj_t, adj_c, equal_var=False)
    rho = sum(dx @ dy for dx, dy in within) / math.sqrt(
        sum(dx @ dx for dx, _ in within) * sum(dy @ dy for _, dy in within)
    )

    assert close(result.theta, theta)
    assert close(result.adjusted_mean_treatment, adj_t.mean()) and close(result.adjusted_mean_holdout, adj_c.mean())
    assert close(result.variance_raw, raw_variance) and close(result.variance_adjusted, adjusted_variance)
    assert close(result.variance_reduction, 1 - adjusted_variance / raw_variance)
    assert abs(result.variance_reduction - rho**2) < 0.02
    assert result.variance_reduction > 0.5
    assert close(result.p_value, welch.pvalue)
    assert close(result.difference.ci_low, welch.confidence_interval().low)


def test_cuped__without_covariate_sums__is_none():
    assert compare_cuped(treatment=TREATMENT, holdout=HOLDOUT) is None


def test_cuped__constant_covariate__leaves_revenue_unadjusted():
    treatment = ArmStats(n=4, conversions=2, sum_y=10, sum_y2=50, sum_x=8, sum_x2=16, sum_xy=20)
    holdout = ArmStats(n=3, conversions=1, sum_y=3, sum_y2=9, sum_x=6, sum_x2=12, sum_xy=6)
    result = compare_cuped(treatment=treatment, holdout=holdout)

    assert result.theta == 0.0
    assert close(result.difference.value, 10 / 4 - 3 / 3) and close(result.variance_reduction, 0.0)


# --- decomposition -----------------------------------------------------------------------------

# Small fixed aggregates: (segment, treatment (n, conversions), holdout (n, conversions)).
SMALL = [("A", (40, 10), (35, 6)), ("B", (25, 3), (30, 5)), ("C", (30, 12), (20, 9))]


def small_decomposition():
    return decompose_lift(
        names=[name for name, _, _ in SMALL],
        n_treatment=[t[0] for _, t, _ in SMALL],
        sum_treatment=[t[1] for _, t, _ in SMALL],
        sumsq_treatment=[t[1] for _, t, _ in SMALL],
        n_holdout=[c[0] for _, _, c in SMALL],
        sum_holdout=[c[1] for _, _, c in SMALL],
        sumsq_holdout=[c[1] for _, _, c in SMALL],
        ddof=0,
        critical=Z95,
    )


def interaction_effects(frame: pd.DataFrame) -> dict[str, float]:
    """Per-segment treatment effects from OLS y ~ C(segment) * treat (reference segment "A")."""
    params = smf.ols("y ~ C(segment) * treat", data=frame).fit().params
    return {
        segment: params["treat"] + (params[f"C(segment)[T.{segment}]:treat"] if segment != "A" else 0.0)
        for segment in sorted(frame.segment.unique())
    }


def test_decomposition__segment_effects__match_ols_interaction_model():
    rows = [
        {"segment": name, "treat": treat, "y": float(i < conversions)}
        for name, t, c in SMALL
        for treat, (n, conversions) in ((1, t), (0, c))
        for i in range(n)
    ]
    effects = interaction_effects(pd.DataFrame(rows))
    decomposition = small_decomposition()

    for contribution in decomposition.contributions:
        assert close(contribution.effect, effects[contribution.name])
        share_t, share_c = contribution.share_treatment, contribution.share_holdout
        assert close(contribution.contribution, (share_t + share_c) / 2 * effects[contribution.name])


def test_decomposition__revenue_segment_effects__match_ols_interaction_model():
    rng = np.random.default_rng(3)
    frames, segments = [], []
    for name, mean_t, mean_c in [("A", 30.0, 25.0), ("B", 12.0, 14.0), ("C", 50.0, 41.0)]:
        y_t, y_c = rng.gamma(2.0, mean_t / 2, 60), rng.gamma(2.0, mean_c / 2, 45)
        frames.append(pd.DataFrame({"segment": name, "treat": np.r_[np.ones(60), np.zeros(45)], "y": np.r_[y_t, y_c]}))
        segments.append(SegmentStats(name, arm_from_users(y_t > 0, y_t), arm_from_users(y_c > 0, y_c)))
    effects = interaction_effects(pd.concat(frames))
    report = lift_report(segments=segments, holdout_share=45 / 105)

    for contribution in report.revenue_decomposition.contributions:
        assert close(contribution.effect, effects[contribution.name])
    decomposition = report.revenue_decomposition
    total = sum(c.contribution for c in decomposition.contributions) + decomposition.mix
    assert close(total, report.overall.revenue.difference.value, 1e-12)


def test_decomposition__contributions_plus_mix__equal_total_lift_exactly():
    decomposition = small_decomposition()
    total = 25 / 95 - 20 / 85

    assert abs(decomposition.total - total) < 1e-15
    assert abs(sum(c.contribution for c in decomposition.contributions) + decomposition.mix - total) < 1e-12
    assert abs(decomposition.mix - sum(c.mix for c in decomposition.contributions)) < 1e-15


def test_decomposition__contribution_ci__is_delta_method_with_fixed_shares():
    decomposition = small_decomposition()

    for (_, (n_t, c_t), (n_c, c_c)), row in zip(SMALL, decomposition.contributions, strict=True):
        p_t, p_c = c_t / n_t, c_c / n_c
        se = (row.share_treatment + row.share_holdout) / 2 * math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
        assert close(row.ci_low, row.contribution - Z95 * se) and close(row.ci_high, row.contribution + Z95 * se)


def test_decomposition__total_ci__matches_overall_wald_and_welch_intervals():
    y_t, y_c = revenue_users()
    half = [slice(0, 300), slice(300, None)]
    segments = [
        SegmentStats(f"S{i}", arm_from_users(y_t[s] > 0, y_t[s]), arm_from_users(y_c[s] > 0, y_c[s]))
        for i, s in enumerate(half)
    ]
    report = lift_report(segments=segments, holdout_share=450 / 1150)
    conversion, revenue = report.overall.conversion.absolute_lift, report.overall.revenue.difference
    ci = sps.ttest_ind(y_t, y_c, equal_var=False).confidence_interval()

    assert close(report.conversion_decomposition.total_ci_low, conversion.ci_low)
    assert close(report.conversion_decomposition.total_ci_high, conversion.ci_high)
    assert close(report.revenue_decomposition.total_ci_low, ci.low)
    assert close(report.revenue_decomposition.total_ci_high, ci.high)
    assert close(revenue.ci_low, ci.low)


def test_decomposition__empty_arm_in_a_segment__puts_its_weight_into_mix():
    decomposition = decompose_lift(
        names=["A", "B"],
        n_treatment=[100, 50],
        sum_treatment=[10, 5],
        sumsq_treatment=[10, 5],
        n_holdout=[20, 0],
        sum_holdout=[1, 0],
        sumsq_holdout=[1, 0],
        ddof=0,
        critical=Z95,
    )
    empty = decomposition.contributions[1]

    assert math.isnan(empty.effect) and math.isnan(empty.ci_low)
    assert empty.contribution == 0.0 and close(empty.mix, 50 / 150 * 0.1)
    assert (
        abs(sum(c.contribution for c in decomposition.contributions) + decomposition.mix - (15 / 150 - 1 / 20)) < 1e-12
    )


arm_counts = st.integers(0, 10**6).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n)))
binary_segments = st.lists(st.tuples(arm_counts, arm_counts), min_size=1, max_size=12).filter(
    lambda rows: sum(t[0] for t, _ in rows) > 0 and sum(c[0] for _, c in rows) > 0
)


@given(binary_segments)
@settings(max_examples=150, deadline=None)
def test_decomposition__binary__contributions_plus_mix_always_equal_total(rows):
    treatment, holdout = [t for t, _ in rows], [c for _, c in rows]
    decomposition = decompose_lift(
        names=[f"s{i}" for i in range(len(rows))],
        n_treatment=[n for n, _ in treatment],
        sum_treatment=[c for _, c in treatment],
        sumsq_treatment=[c for _, c in treatment],
        n_holdout=[n for n, _ in holdout],
        sum_holdout=[c for _, c in holdout],
        sumsq_holdout=[c for _, c in holdout],
        ddof=0,
        critical=Z95,
    )
    total = sum(c for _, c in treatment) / sum(n for n, _ in treatment) - sum(c for _, c in holdout) / sum(
        n for n, _ in holdout
    )

    assert abs(decomposition.total - total) < 1e-12
    assert abs(sum(c.contribution for c in decomposition.contributions) + decomposition.mix - total) < 1e-12


revenue_arm = st.tuples(
    st.integers(0, 100_000),
    st.floats(0, 1_000, allow_nan=False),  # mean revenue per user
    st.floats(0, 10_000, allow_nan=False),  # variance of revenue per user
)
revenue_segments = st.lists(st.tuples(revenue_arm, revenue_arm), min_size=1, max_size=12).filter(
    lambda rows: sum(t[0] for t, _ in rows) > 0 and sum(c[0] for _, c in rows) > 0
)


def revenue_sums(n: int, mean: float, variance: float) -> tuple[float, float]:
    return n * mean, max(n - 1, 0) * variance + n * mean * mean


@given(revenue_segments)
@settings(max_examples=150, deadline=None)
def test_decomposition__revenue__contributions_plus_mix_always_equal_total(rows):
    sums_t = [revenue_sums(*t) for t, _ in rows]
    sums_c = [revenue_sums(*c) for _, c in rows]
    decomposition = decompose_lift(
        names=[f"s{i}" for i in range(len(rows))],
        n_treatment=[t[0] for t, _ in rows],
        sum_treatment=[s for s, _ in sums_t],
        sumsq_treatment=[q for _, q in sums_t],
        n_holdout=[c[0] for _, c in rows],
        sum_holdout=[s for s, _ in sums_c],
        sumsq_holdout=[q for _, q in sums_c],
        ddof=1,
        critical=Z95,
    )
    total = sum(s for s, _ in sums_t) / sum(t[0] for t, _ in rows) - sum(s for s, _ in sums_c) / sum(
        c[0] for _, c in rows
    )
    scale = max(1.0, *(arm[1] for row in rows for arm in row))

    assert abs(decomposition.total - total) <= 1e-12 * scale
    assert abs(sum(c.contribution for c in decomposition.contributions) + decomposition.mix - total) <= 1e-12 * scale


@given(binary_segments.filter(lambda rows: len(rows) <= 6))
@settings(max_examples=60, deadline=None)
def test_lift_report__any_valid_counts__decomposition_adds_up_and_is_json_safe(rows):
    segments = [SegmentStats(f"s{i}", binary_arm(*t), binary_arm(*c)) for i, (t, c) in enumerate(rows)]
    report = lift_report(segments=segments, holdout_share=0.2)
    decomposition = report.conversion_decomposition

    assert close(decomposition.total, report.overall.conversion.absolute_lift.value, 1e-12)
    assert (
        abs(sum(c.contribution for c in decomposition.contributions) + decomposition.mix - decomposition.total) < 1e-12
    )
    json.dumps(report.to_dict(), allow_nan=False)


# --- edge cases --------------------------------------------------------------------------------


def test_compare_rates__empty_holdout__is_nan_without_crashing():
    result = compare_rates(treatment=TREATMENT, holdout=ArmStats(n=0, conversions=0))

    assert close(result.rate_treatment, 0.045) and math.isnan(result.rate_holdout)
    assert math.isnan(result.absolute_lift.value) and math.isnan(result.p_value)
    assert math.isnan(result.prob_treatment_better)


def test_compare_rates__no_conversions_anywhere__p_value_and_relative_lift_undefined():
    result = compare_rates(treatment=ArmStats(n=500, conversions=0), holdout=ArmStats(n=100, conversions=0))

    assert result.absolute_lift.value == 0.0
    assert math.isnan(result.p_value) and math.isnan(result.relative_lift.value)
    # Beta(1, b1) vs Beta(1, b2): P(X1 > X2) = b2 / (b1 + b2) in closed form.
    assert close(result.prob_treatment_better, 101 / 602)


def test_compare_rates__no_treatment_conversions__relative_lift_is_minus_100_percent_without_interval():
    result = compare_rates(treatment=ArmStats(n=500, conversions=0), holdout=ArmStats(n=100, conversions=4))

    assert result.relative_lift.value == -1.0 and math.isnan(result.relative_lift.ci_low)
    assert close(result.p_value, proportions_ztest([0, 4], [500, 100])[1])


def test_arm_stats__invalid_counts__raise_clear_error():
    with pytest.raises(ValueError, match="conversions"):
        ArmStats(n=10, conversions=11)
    with pytest.raises(ValueError, match="sum_x, sum_x2 and sum_xy"):
        ArmStats(n=10, conversions=1, sum_x=3.0)


def test_arm_stats__decimals_from_postgres__are_stored_as_floats():
    arm = ArmStats(n=3, conversions=1, sum_y=Decimal("12.50"), sum_y2=Decimal("156.25"))

    assert isinstance(arm.sum_y, float) and arm.sum_y == 12.5


# --- the report --------------------------------------------------------------------------------


def persona_segments(scale: int = 10) -> list[SegmentStats]:
    """Trail runners gain, Bargain hunters lose, Casual is flat; a clean 10 % holdout."""
    return [
        SegmentStats(
            "Trail runners", binary_arm(20_000 * scale, 1_400 * scale), binary_arm(2_200 * scale, 110 * scale)
        ),
        SegmentStats("Bargain hunters", binary_arm(18_000 * scale, 540 * scale), binary_arm(2_000 * scale, 90 * scale)),
        SegmentStats("Casual", binary_arm(25_000 * scale, 1_000 * scale), binary_arm(2_800 * scale, 110 * scale)),
    ]


@pytest.mark.parametrize(("correction", "reference"), [("bh", "fdr_bh"), ("holm", "holm")])
def test_lift_report__q_values_and_significance__match_multipletests(correction, reference):
    segments = persona_segments(scale=1)
    report = lift_report(segments=segments, holdout_share=0.1, correction=correction)
    p_values = [
        proportions_ztest([s.treatment.conversions, s.holdout.conversions], [s.treatment.n, s.holdout.n])[1]
        for s in segments
    ]
    reject, expected, _, _ = multipletests(p_values, alpha=0.05, method=reference)

    assert [r.conversion_q_value for r in report.segments] == pytest.approx(expected, rel=0, abs=1e-12)
    assert [r.conversion_significant for r in report.segments] == list(reject)
    assert any(reject) and not all(reject)


def test_lift_report__srm_in_one_segment__is_flagged_there_and_in_warnings():
    segments = [
        *persona_segments(scale=1),
        SegmentStats("Broken", binary_arm(9_000, 300), binary_arm(2_000, 60)),
    ]
    report = lift_report(segments=segments, holdout_share=0.1)
    by_name = {r.name: r for r in report.segments}
    expected = sps.chisquare([9_000, 2_000], f_exp=[9_900, 1_100])

    assert by_name["Broken"].sample_ratio.mismatch and not by_name["Casual"].sample_ratio.mismatch
    assert close(by_name["Broken"].sample_ratio.p_value, expected.pvalue)
    assert any("Broken" in warning for warning in report.warnings)
    assert report.overall.sample_ratio.mismatch == (report.overall.sample_ratio.p_value < 0.001)


def test_lift_report__heterogeneity__uses_segment_lifts_and_standard_errors():
    report = lift_report(segments=persona_segments(scale=1), holdout_share=0.1)
    lifts = [r.conversion.absolute_lift for r in report.segments]
    reference = combine_effects(
        np.array([e.value for e in lifts]), np.array([e.std_error for e in lifts]) ** 2, method_re="chi2"
    )

    assert close(report.conversion_heterogeneity.q, reference.q)
    assert report.conversion_heterogeneity.p_value < 0.05


def test_lift_report__segment_with_empty_arm__does_not_crash_and_to_dict_uses_none():
    segments = [
        *persona_segments(scale=1),
        SegmentStats("New", binary_arm(40, 2), ArmStats(n=0, conversions=0)),
    ]
    report = lift_report(segments=segments, holdout_share=0.1)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    new = data["segments"][3]

    assert new["conversion"]["p_value"] is None and new["conversion_q_value"] is None
    assert new["conversion_significant"] is False
    assert data["conversion_decomposition"]["contributions"][3]["effect"] is None
    assert data["conversion_decomposition"]["contributions"][3]["contribution"] == 0.0
    assert isinstance(data["segments"][0]["conversion_q_value"], float)


def test_lift_report__covariates_present__reports_cuped_overall_and_per_segment():
    x_t, y_t, x_c, y_c = cuped_users()
    segments = [
        SegmentStats(
            "First",
            arm_from_users(y_t[:200] > 20, y_t[:200], x_t[:200]),
            arm_from_users(y_c[:150] > 20, y_c[:150], x_c[:150]),
        ),
        SegmentStats(
            "Second",
            arm_from_users(y_t[200:] > 20, y_t[200:], x_t[200:]),
            arm_from_users(y_c[150:] > 20, y_c[150:], x_c[150:]),
        ),
    ]
    report = lift_report(segments=segments, holdout_share=300 / 700)
    whole = compare_cuped(treatment=arm_from_users(y_t > 20, y_t, x_t), holdout=arm_from_users(y_c > 20, y_c, x_c))

    assert report.overall.cuped is not None and all(r.cuped is not None for r in report.segments)
    assert close(report.overall.cuped.difference.value, whole.difference.value)
    assert lift_report(segments=persona_segments(1), holdout_share=0.1).overall.cuped is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"holdout_share": 1.0}, "holdout_share"),
        ({"holdout_share": 0.1, "correction": "fdr"}, "correction"),
        ({"holdout_share": 0.1, "alpha": 0}, "alpha"),
    ],
)
def test_lift_report__invalid_options__raise_naming_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        lift_report(segments=persona_segments(1), **options)


def test_lift_report__duplicate_or_no_segments__raise():
    with pytest.raises(ValueError, match="unique"):
        lift_report(segments=persona_segments(1) * 2, holdout_share=0.1)
    with pytest.raises(ValueError, match="at least one"):
        lift_report(segments=[], holdout_share=0.1)


# --- plain-language summary --------------------------------------------------------------------


def test_summary_sentences__headline_names_biggest_contributor_and_negative_segment():
    report = lift_report(segments=persona_segments(), holdout_share=0.1)
    lift = report.overall.conversion.absolute_lift
    trail = next(c for c in report.conversion_decomposition.contributions if c.name == "Trail runners")
    sentences = summary_sentences(report, metric_label="conversion")

    assert sentences[0] == (
        f"Personalization added {lift.value * 100:.2f} points of conversion "
        f"(95 % CI {lift.ci_low * 100:.2f} to {lift.ci_high * 100:.2f}); "
        f"Trail runners alone accounts for {trail.contribution * 100:+.2f} points; "
        f"for Bargain hunters it is negative."
    )
    assert trail.contribution > lift.value  # Bargain hunters pull the other way
    assert lift.excludes_zero
    assert any(s.startswith("After correcting for 3 segments (Benjamini-Hochberg), 2 segments show") for s in sentences)
    assert any("differs between segments" in s for s in sentences)


def test_summary_sentences__all_segments_gain__gives_top_segments_share():
    segments = [
        SegmentStats("Trail runners", binary_arm(200_000, 14_000), binary_arm(22_000, 1_320)),
        SegmentStats("Casual", binary_arm(250_000, 10_250), binary_arm(28_000, 1_120)),
    ]
    report = lift_report(segments=segments, holdout_share=0.1)
    trail = report.conversion_decomposition.contributions[0]
    share = trail.contribution / report.overall.conversion.absolute_lift.value

    assert 0.5 < share < 1
    assert (
        f"; {share * 100:.0f} % of it came from Trail runners."
        in summary_sentences(report, metric_label="conversion")[0]
    )


def test_summary_sentences__revenue__reports_revenue_lift_and_cuped():
    x_t, y_t, x_c, y_c = cuped_users()
    segments = [
        SegmentStats(name, arm_from_users(y_t[t] > 20, y_t[t], x_t[t]), arm_from_users(y_c[c] > 20, y_c[c], x_c[c]))
        for name, t, c in [
            ("First", slice(0, 200), slice(0, 150)),
            ("Second", slice(200, None), slice(150, None)),
        ]
    ]
    report = lift_report(segments=segments, holdout_share=300 / 700)
    revenue, cuped = report.overall.revenue.difference, report.overall.cuped
    sentences = summary_sentences(report, metric_label="revenue per user", metric="revenue")
    conversion_sentences = summary_sentences(report, metric_label="conversion")

    assert sentences[0].startswith(
        f"Personalization added {revenue.value:.2f} in revenue per user "
        f"(95 % CI {revenue.ci_low:.2f} to {revenue.ci_high:.2f})"
    )
    assert sentences[-1] == (
        f"Adjusting for pre-period behaviour (CUPED) gives {cuped.difference.value:+.2f} "
        f"(95 % CI {cuped.difference.ci_low:.2f} to {cuped.difference.ci_high:.2f}) with "
        f"{cuped.variance_reduction * 100:.0f} % less variance."
    )
    assert (
        conversion_sentences[0].startswith("Personalization added")
        and "points of conversion" in (conversion_sentences[0])
    )
    assert not any("CUPED" in s or "revenue" in s for s in conversion_sentences)


def test_summary_sentences__unknown_metric__raises():
    with pytest.raises(ValueError, match="metric"):
        summary_sentences(
            lift_report(segments=persona_segments(1), holdout_share=0.1),
            metric_label="x",
            metric="clicks",  # type: ignore[arg-type]
        )


def test_summary_sentences__sample_ratio_mismatch__comes_first():
    segments = [
        *persona_segments(scale=1),
        SegmentStats("Broken", binary_arm(9_000, 300), binary_arm(2_000, 60)),
    ]
    sentences = summary_sentences(lift_report(segments=segments, holdout_share=0.1), metric_label="sign-ups")

    assert sentences[0].startswith("Sample ratio mismatch")
    assert any("points of sign-ups" in s for s in sentences)


def test_summary_sentences__lift_within_noise__says_so_and_claims_no_segment():
    segments = [SegmentStats("Only", binary_arm(9_000, 450), binary_arm(1_000, 49))]
    sentences = summary_sentences(lift_report(segments=segments, holdout_share=0.1), metric_label="conversion")

    assert "not distinguishable from zero" in sentences[0]
    assert "came from" not in sentences[0]  # one segment: "100 % of it came from Only" says nothing
    assert not any("After correcting" in s for s in sentences)
