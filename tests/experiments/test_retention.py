"""experiments.retention: the closed-window rule, the SQL that mirrors it, and the per-window comparison."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from django.db import connection
from statsmodels.stats.proportion import confint_proportions_2indep

from experiments.retention import (
    WINDOWS,
    RetentionCounts,
    compare_retention,
    retention_eligible,
    retention_window_bounds,
)

EXPOSED = dt.datetime(2026, 3, 1, 15, 30, tzinfo=dt.UTC)


def test_window_bounds__day_d_is_the_24_hours_starting_d_days_after_exposure():
    start, end = retention_window_bounds(first_exposure=EXPOSED, window=(8, 30))
    assert start == EXPOSED + dt.timedelta(days=8)
    assert end == EXPOSED + dt.timedelta(days=31)


@pytest.mark.parametrize("window", WINDOWS)
def test_eligible__only_once_the_whole_window_has_passed(window):
    _, end = retention_window_bounds(first_exposure=EXPOSED, window=window)
    assert not retention_eligible(first_exposure=EXPOSED, as_of=end - dt.timedelta(microseconds=1), window=window)
    assert retention_eligible(first_exposure=EXPOSED, as_of=end, window=window)


@pytest.mark.parametrize("window", [(0, 7), (8, 7), (-1, 3)])
def test_window__day_zero_or_reversed__raises_naming_the_fix(window):
    with pytest.raises(ValueError, match="1 <= first <= last"):
        retention_eligible(first_exposure=EXPOSED, as_of=EXPOSED, window=window)


@pytest.mark.django_db
def test_documented_sql__agrees_with_the_pure_rule_at_every_boundary():
    as_of = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    cases = []
    for first, last in WINDOWS:
        for offset in (-dt.timedelta(seconds=1), dt.timedelta(0), dt.timedelta(seconds=1)):
            exposure = as_of - dt.timedelta(days=last + 1) + offset
            event = exposure + dt.timedelta(days=first) + offset
            cases.append((exposure, event, first, last))
    with connection.cursor() as cursor:
        for exposure, event, first, last in cases:
            cursor.execute(
                "SELECT %(e)s <= %(as_of)s - make_interval(days => %(last)s + 1),"
                " %(t)s >= %(e)s + make_interval(days => %(first)s)"
                " AND %(t)s < %(e)s + make_interval(days => %(last)s + 1)",
                {"e": exposure, "as_of": as_of, "t": event, "first": first, "last": last},
            )
            eligible, returned = cursor.fetchone()
            start, end = retention_window_bounds(first_exposure=exposure, window=(first, last))
            assert eligible == retention_eligible(first_exposure=exposure, as_of=as_of, window=(first, last))
            assert returned == (start <= event < end)


def test_compare_retention__each_window_is_a_rate_comparison_matching_statsmodels():
    treatment = {(1, 7): RetentionCounts(5000, 1900), (8, 30): RetentionCounts(3200, 700)}
    holdout = {(1, 7): RetentionCounts(1200, 420), (8, 30): RetentionCounts(800, 200), (31, 90): RetentionCounts(9, 1)}
    results = compare_retention(treatment=treatment, holdout=holdout)
    assert [r.window for r in results] == [(1, 7), (8, 30)]  # (31, 90) has no treatment row yet
    for result in results:
        t, c = treatment[result.window], holdout[result.window]
        low, high = confint_proportions_2indep(t.returned, t.eligible, c.returned, c.eligible, method="wald")
        lift = result.comparison.absolute_lift
        assert math.isclose(lift.ci_low, low, rel_tol=1e-9) and math.isclose(lift.ci_high, high, rel_tol=1e-9)
    assert results[1].comparison.absolute_lift.value < 0  # fewer came back on days 8-30 with personalization


def test_compare_retention__more_returned_than_eligible__raises_naming_arm_and_window():
    with pytest.raises(ValueError, match=r"holdout window \(1, 7\): returned must be between 0 and eligible"):
        compare_retention(
            treatment={(1, 7): RetentionCounts(10, 3)},
            holdout={(1, 7): RetentionCounts(10, 11)},
        )
