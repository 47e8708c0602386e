"""The result dataclasses of the lift statistics in `experiments.stats`, and `jsonable`.

Undefined quantities are nan here and None after `LiftReport.to_dict()`. Pure numpy, no Django
import; `experiments.stats` re-exports every name, so importing them from there keeps working.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from experiments.decomposition import Decomposition

NAN = math.nan
Correction = Literal["bh", "holm"]


@dataclass(frozen=True)
class ArmStats:
    """One GROUP BY row: one arm of one segment (y = revenue per user, x = pre-period covariate)."""

    n: int
    conversions: int
    sum_y: float = 0.0
    sum_y2: float = 0.0
    sum_x: float | None = None
    sum_x2: float | None = None
    sum_xy: float | None = None

    def __post_init__(self) -> None:
        # PostgreSQL returns Decimal for SUM(numeric); store plain numbers so the arithmetic works.
        for field in ("n", "conversions"):
            object.__setattr__(self, field, int(getattr(self, field)))
        for field in ("sum_y", "sum_y2", "sum_x", "sum_x2", "sum_xy"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, float(value))
        if self.n < 0 or not 0 <= self.conversions <= self.n:
            raise ValueError(f"ArmStats needs 0 <= conversions <= n, got n={self.n}, conversions={self.conversions}.")
        if self.sum_y2 < 0 or (self.sum_x2 is not None and self.sum_x2 < 0):
            raise ValueError("ArmStats sum_y2 and sum_x2 are sums of squares and cannot be negative.")
        if len({self.sum_x is None, self.sum_x2 is None, self.sum_xy is None}) > 1:
            raise ValueError("ArmStats needs sum_x, sum_x2 and sum_xy together (or none of them).")

    @property
    def has_covariate(self) -> bool:
        return self.sum_x is not None

    def __add__(self, other: ArmStats) -> ArmStats:
        both = self.has_covariate and other.has_covariate
        return ArmStats(
            n=self.n + other.n,
            conversions=self.conversions + other.conversions,
            sum_y=self.sum_y + other.sum_y,
            sum_y2=self.sum_y2 + other.sum_y2,
            sum_x=self.sum_x + other.sum_x if both else None,  # type: ignore[operator]
            sum_x2=self.sum_x2 + other.sum_x2 if both else None,  # type: ignore[operator]
            sum_xy=self.sum_xy + other.sum_xy if both else None,  # type: ignore[operator]
        )


@dataclass(frozen=True)
class SegmentStats:
    """Both arms of one segment."""

    name: str
    treatment: ArmStats
    holdout: ArmStats


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and two-sided confidence interval."""

    value: float
    ci_low: float = NAN
    ci_high: float = NAN
    std_error: float = NAN

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


@dataclass(frozen=True)
class RateComparison:
    """Binary goal: treatment vs holdout conversion rates."""

    users_treatment: int
    users_holdout: int
    conversions_treatment: int
    conversions_holdout: int
    rate_treatment: float
    rate_holdout: float
    absolute_lift: Estimate
    relative_lift: Estimate
    p_value: float
    prob_treatment_better: float


@dataclass(frozen=True)
class MeanComparison:
    """Continuous goal (revenue per user): Welch comparison of means."""

    mean_treatment: float
    mean_holdout: float
    difference: Estimate
    p_value: float
    df: float


@dataclass(frozen=True)
class CupedComparison:
    """Revenue difference adjusted for the pre-exposure covariate (CUPED / ANCOVA)."""

    theta: float
    adjusted_mean_treatment: float
    adjusted_mean_holdout: float
    difference: Estimate
    p_value: float
    variance_raw: float
    variance_adjusted: float
    variance_reduction: float


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square goodness of fit of the arm sizes against the configured holdout share."""

    name: str
    users_treatment: int
    users_holdout: int
    expected_holdout_share: float | None  # None: no expected split configured, not checked
    observed_holdout_share: float
    chi2: float
    p_value: float
    mismatch: bool
    warning: str | None


@dataclass(frozen=True)
class Heterogeneity:
    """Cochran's Q test that all segments share one lift, with I² (share of spread beyond chance)."""

    segments_used: int
    pooled_effect: float
    q: float
    df: int
    p_value: float
    i_squared: float


@dataclass(frozen=True)
class SegmentResult:
    """Everything about one segment (or, for `LiftReport.overall`, all users; its q = p)."""

    name: str
    conversion: RateComparison
    revenue: MeanComparison
    cuped: CupedComparison | None
    conversion_q_value: float
    conversion_significant: bool
    revenue_q_value: float
    revenue_significant: bool
    sample_ratio: SampleRatioCheck


@dataclass(frozen=True)
class LiftReport:
    """The full per-segment lift analysis; `to_dict()` gives a JSON-able dict."""

    alpha: float
    correction: Correction
    holdout_share: float | None
    overall: SegmentResult
    segments: tuple[SegmentResult, ...]
    conversion_decomposition: Decomposition
    revenue_decomposition: Decomposition
    conversion_heterogeneity: Heterogeneity
    revenue_heterogeneity: Heterogeneity
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
