"""Retention windows (days 1-7, 8-30, 31-90 after first exposure) and who may be counted in them.

A person counts in a window only once the window has closed for them: someone exposed three days
ago cannot have returned on day 20 yet, and counting them as "not returned" would drag every
recently growing arm down. The rule is one pure helper, `retention_eligible`, that the SQL mirrors:

    day d after first exposure e is [e + d days, e + (d + 1) days), so window (first, last) is
    [e + first days, e + (last + 1) days). A person is eligible at `as_of` when
    e + (last + 1) days <= as_of, i.e. in SQL
        first_exposure <= :as_of - make_interval(days => last + 1)
    and returned when an event (any, or the chosen type) has, with d = ts - first_exposure,
        d >= interval 'first days' AND d < interval 'last + 1 days' (a day is 24 hours).

Day 0 (the exposure day itself) belongs to no window. Pure Python, no Django import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from experiments.stats import compare_rates
from experiments.stats_types import ArmStats, RateComparison

WINDOWS: tuple[tuple[int, int], ...] = ((1, 7), (8, 30), (31, 90))


def _check_window(window: tuple[int, int]) -> None:
    first, last = window
    if not 1 <= first <= last:
        raise ValueError(f"window must be (first day, last day) with 1 <= first <= last, e.g. (8, 30); got {window}.")


def retention_window_bounds(*, first_exposure: dt.datetime, window: tuple[int, int]) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the window for someone first exposed at `first_exposure`."""
    _check_window(window)
    first, last = window
    return first_exposure + dt.timedelta(days=first), first_exposure + dt.timedelta(days=last + 1)


def retention_eligible(*, first_exposure: dt.datetime, as_of: dt.datetime, window: tuple[int, int]) -> bool:
    """True once the whole window lies before `as_of`, so "not returned" is final."""
    _, end = retention_window_bounds(first_exposure=first_exposure, window=window)
    return end <= as_of


@dataclass(frozen=True)
class RetentionCounts:
    """One arm in one window: people whose window has closed, and those of them who came back."""

    eligible: int
    returned: int


@dataclass(frozen=True)
class RetentionResult:
    """One window, treatment vs holdout, compared as a rate (same statistics as conversion)."""

    window: tuple[int, int]
    comparison: RateComparison


def compare_retention(
    *,
    treatment: Mapping[tuple[int, int], RetentionCounts],
    holdout: Mapping[tuple[int, int], RetentionCounts],
    alpha: float = 0.05,
) -> tuple[RetentionResult, ...]:
    """Each window present in both arms, in window order: retention rate, lift, interval and p-value."""
    results = []
    for window in sorted(set(treatment) & set(holdout)):
        _check_window(window)
        arms = []
        for name, counts in (("treatment", treatment[window]), ("holdout", holdout[window])):
            if not 0 <= counts.returned <= counts.eligible:
                raise ValueError(
                    f"{name} window {window}: returned must be between 0 and eligible, got "
                    f"{counts.returned} returned of {counts.eligible} eligible."
                )
            arms.append(ArmStats(n=counts.eligible, conversions=counts.returned))
        results.append(RetentionResult(window, compare_rates(treatment=arms[0], holdout=arms[1], alpha=alpha)))
    return tuple(results)
