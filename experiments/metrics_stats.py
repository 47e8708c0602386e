"""Mean, count, ratio and capped metrics with delta-method variances, and CUPED/CUPAC for any of them.

The input is one `Moments` row per (segment, arm): the user count, the sums of a few per-user
columns and the sums of their pairwise products. For columns a, b the SQL is one GROUP BY:

    SELECT segment, arm, COUNT(*), SUM(a), SUM(b), SUM(a * a), SUM(a * b), SUM(b * b) ...

so a report with several metrics stays one scan. A metric names its columns: `(i,)` is the mean of
column i per user (revenue per user, events per user: a count metric is a mean metric), `(i, j)`
is the ratio of means Σ column i / Σ column j (revenue per session: i = revenue, j = sessions, both
per user, so the user stays the randomisation unit and the delta method gives its variance).

Every estimate is linearised: a metric's value f(means) has a gradient g over the columns, its
variance is g' S g / (n (n - 1)) with S the centred cross-product matrix (the delta method; exact
for a mean), and CUPED treats g' (column values) as the per-user value to adjust. Intervals are
normal (z), as the delta method is a large-sample method. Undefined quantities (no users, one user,
a zero denominator) are nan; only malformed input raises ValueError.

Capped (winsorized) revenue: the cap is one number for both arms, computed once in SQL with
`percentile_cont(q) WITHIN GROUP (ORDER BY revenue)` over every exposed user of the experiment
(zeros included); the arm rows then sum `LEAST(revenue, cap)` and its square. `winsor_cap` is the
same interpolation in numpy, for callers without SQL and for tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from experiments.stats_types import NAN, Estimate

Metric = tuple[int] | tuple[int, int]


@dataclass(frozen=True)
class Moments:
    """One GROUP BY row for one arm: users, Σ column k, and Σ column k x column l (symmetric)."""

    n: int
    sums: tuple[float, ...]
    products: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        # PostgreSQL returns Decimal for SUM(numeric); plain floats keep numpy happy.
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "sums", tuple(float(s) for s in self.sums))
        object.__setattr__(self, "products", tuple(tuple(float(p) for p in row) for row in self.products))
        k = len(self.sums)
        if self.n < 0:
            raise ValueError(f"Moments n is a count of users and cannot be negative, got {self.n}.")
        if k == 0 or len(self.products) != k or any(len(row) != k for row in self.products):
            raise ValueError(f"Moments needs {k} sums and a {k} x {k} matrix of product sums.")
        if any(self.products[i][i] < 0 for i in range(k)):
            raise ValueError("Moments diagonal products are sums of squares and cannot be negative.")

    @classmethod
    def from_values(cls, values: np.ndarray) -> Moments:
        """The row the GROUP BY would give for per-user values of shape (users, columns)."""
        values = np.asarray(values, dtype=float).reshape(len(values), -1)
        return cls(len(values), tuple(values.sum(axis=0)), tuple(map(tuple, values.T @ values)))

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.n + other.n,
            tuple(np.add(self.sums, other.sums)),
            tuple(map(tuple, np.add(self.products, other.products))),
        )

    def means(self) -> np.ndarray:
        return np.asarray(self.sums) / self.n if self.n else np.full(len(self.sums), NAN)

    def centred_products(self) -> np.ndarray:
        """Σ (a - mean a)(b - mean b) for every pair of columns; S / (n - 1) is the covariance."""
        sums = np.asarray(self.sums)
        if self.n == 0:
            return np.zeros((len(sums), len(sums)))
        return np.asarray(self.products) - np.outer(sums, sums) / self.n


@dataclass(frozen=True)
class MetricComparison:
    """One metric, treatment vs holdout: values, delta-method variances, difference and lift."""

    value_treatment: float
    value_holdout: float
    variance_treatment: float  # variance of the arm's estimate (not of a user's value)
    variance_holdout: float
    difference: Estimate
    relative_lift: Estimate
    p_value: float


@dataclass(frozen=True)
class CupedResult:
    """A metric adjusted with a pre-exposure (CUPED) or predicted (CUPAC) covariate."""

    theta: float
    adjusted_treatment: float
    adjusted_holdout: float
    difference: Estimate  # std_error: theta treated as known, arms' variances kept apart
    p_value: float
    ols_std_error: float  # classic OLS SE of y ~ treat + x (theta estimated, one residual variance)
    variance_raw: float
    variance_adjusted: float
    variance_reduction: float  # 1 - variance_adjusted / variance_raw


def _check_metric(metric: Sequence[int], moments: Moments, name: str) -> None:
    k = len(moments.sums)
    if len(metric) not in (1, 2) or any(not 0 <= i < k for i in metric):
        raise ValueError(
            f"{name} must be (column,) for a mean or (numerator, denominator) for a ratio, with columns "
            f"between 0 and {k - 1}; got {tuple(metric)}."
        )


def linearise(*, moments: Moments, metric: Metric) -> tuple[float, np.ndarray]:
    """The metric's value and its gradient over the columns (the delta method's linear term).

    A mean has gradient e_i; a ratio of means m_i / m_j has (e_i - r e_j) / m_j, so
    g' (values of one user) is that user's linearised contribution.
    """
    _check_metric(metric, moments, "metric")
    means = moments.means()
    gradient = np.zeros(len(means))
    if len(metric) == 1:
        gradient[metric[0]] = 1.0
        return float(means[metric[0]]), gradient
    num, den = metric
    if not means[den]:
        return NAN, np.full(len(means), NAN)
    ratio = means[num] / means[den]
    gradient[num], gradient[den] = 1 / means[den], -ratio / means[den]
    return float(ratio), gradient


def metric_variance(*, moments: Moments, gradient: np.ndarray, other: np.ndarray | None = None) -> float:
    """Delta-method (co)variance of two linearised estimates of one arm: g' S h / (n (n - 1))."""
    if moments.n < 2:
        return NAN
    other = gradient if other is None else other
    return float(gradient @ moments.centred_products() @ other) / (moments.n * (moments.n - 1))


def _normal_test(diff: float, se: float, alpha: float) -> tuple[Estimate, float]:
    if not (math.isfinite(diff) and math.isfinite(se)):
        return Estimate(diff), NAN
    if se == 0:
        return Estimate(diff, std_error=0.0), NAN
    half = float(special.ndtri(1 - alpha / 2)) * se
    return Estimate(diff, diff - half, diff + half, se), float(2 * special.ndtr(-abs(diff) / se))


def compare_metric(*, treatment: Moments, holdout: Moments, metric: Metric, alpha: float = 0.05) -> MetricComparison:
    """A mean, count, capped or ratio metric: difference and relative lift with delta-method intervals.

    The difference's variance is the sum of the arms' (independent samples); the relative lift
    v_T / v_C - 1 has the linear delta-method SE sqrt(V_T + r^2 V_C) / v_C, r = v_T / v_C,
    and is nan when the holdout value is 0.
    """
    _check_metric(metric, holdout, "metric")
    value_t, grad_t = linearise(moments=treatment, metric=metric)
    value_c, grad_c = linearise(moments=holdout, metric=metric)
    var_t = metric_variance(moments=treatment, gradient=grad_t)
    var_c = metric_variance(moments=holdout, gradient=grad_c)
    difference, p_value = _normal_test(value_t - value_c, math.sqrt(var_t + var_c), alpha)
    relative = Estimate(NAN)
    if value_c and math.isfinite(value_c):
        ratio = value_t / value_c
        relative, _ = _normal_test(ratio - 1, math.sqrt(var_t + ratio * ratio * var_c) / abs(value_c), alpha)
    return MetricComparison(value_t, value_c, var_t, var_c, difference, relative, p_value)


def winsor_cap(*, values: np.ndarray, percentile: float) -> float:
    """The cap PostgreSQL's percentile_cont(percentile) gives: linear interpolation between order statistics.

    Position percentile * (n - 1) in the sorted values (numpy's default "linear" method). When that
    position is a whole number the cap is an order statistic and capping equals
    scipy.stats.mstats.winsorize(values, limits=(0, 1 - percentile)).
    """
    if not 0 < percentile <= 1:
        raise ValueError(f"percentile must be in (0, 1] (e.g. 0.99 caps the top 1 %), got {percentile}.")
    values = np.asarray(values, dtype=float)
    return float(np.quantile(values, percentile)) if values.size else NAN


def cuped_compare(
    *, treatment: Moments, holdout: Moments, metric: Metric, covariate: Metric, alpha: float = 0.05
) -> CupedResult:
    """CUPED (covariate = the metric's own pre-exposure value) or CUPAC (a predicted value), any metric.

    With linearised per-user values y (the metric) and x (the covariate), theta is the pooled
    within-arm slope Σ_arms S_xy / Σ_arms S_xx, and each arm's estimate becomes
    Y_arm - theta (X_arm - X_all), X_all the covariate over both arms. For a mean metric with a mean
    covariate the adjusted difference is exactly the treatment coefficient of OLS y ~ treat + x.
    Its std_error treats theta as known and keeps the arms' variances apart (Welch-like, the usual
    CUPED practice); `ols_std_error` is the classic (non-robust) OLS standard error of that
    coefficient, s^2 / (n_T n_C / n - (Σ (T - T̄)(x - x̄))^2 / Σ (x - x̄)^2) with s^2 = RSS / (n - 3),
    which statsmodels reports; the two differ by O(1/n) when the arms have equal variances.
    A covariate without spread gives theta = 0 (no adjustment).
    """
    _check_metric(metric, holdout, "metric")
    _check_metric(covariate, holdout, "covariate")
    arms = (treatment, holdout)
    y = [linearise(moments=m, metric=metric) for m in arms]
    x = [linearise(moments=m, metric=covariate) for m in arms]
    if min(treatment.n, holdout.n) < 2 or not all(math.isfinite(v) for v, _ in (*y, *x)):
        return CupedResult(NAN, NAN, NAN, Estimate(NAN), NAN, NAN, NAN, NAN, NAN)
    # Centred sums of the linearised values: g' S h is Σ (y - ȳ)(x - x̄) within the arm.
    s_yy = [gy @ m.centred_products() @ gy for m, (_, gy) in zip(arms, y, strict=True)]
    s_xy = [gy @ m.centred_products() @ gx for m, (_, gy), (_, gx) in zip(arms, y, x, strict=True)]
    s_xx = [gx @ m.centred_products() @ gx for m, (_, gx) in zip(arms, x, strict=True)]
    theta = float(sum(s_xy) / sum(s_xx)) if sum(s_xx) > 0 else 0.0
    x_all, _ = linearise(moments=treatment + holdout, metric=covariate)
    adjusted = [v - theta * (xv - x_all) for (v, _), (xv, _) in zip(y, x, strict=True)]
    residual = [
        max(syy - 2 * theta * sxy + theta * theta * sxx, 0.0) for syy, sxy, sxx in zip(s_yy, s_xy, s_xx, strict=True)
    ]
    n = [m.n for m in arms]
    variance_adjusted = sum(r / (k * (k - 1)) for r, k in zip(residual, n, strict=True))
    variance_raw = sum(s / (k * (k - 1)) for s, k in zip(s_yy, n, strict=True))
    difference, p_value = _normal_test(adjusted[0] - adjusted[1], math.sqrt(variance_adjusted), alpha)

    total = n[0] + n[1]
    between = n[0] * n[1] / total  # Σ (T - T̄)^2
    gap = x[0][0] - x[1][0]
    s_xx_total = sum(s_xx) + between * gap * gap
    denominator = between - (between * gap) ** 2 / s_xx_total if s_xx_total > 0 else between
    ols_se = math.sqrt(sum(residual) / (total - 3) / denominator) if total > 3 and denominator > 0 else NAN
    reduction = 1 - variance_adjusted / variance_raw if variance_raw > 0 else NAN
    return CupedResult(
        theta, adjusted[0], adjusted[1], difference, p_value, ols_se, variance_raw, variance_adjusted, reduction
    )
