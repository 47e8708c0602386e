import hashlib
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from personalization.decide import hashing
from personalization.decide.hashing import pick_index, unit_bucket

UNITS = [f"user-{i}" for i in range(100_000)]


def test_unit_bucket__same_inputs__same_bucket_in_unit_interval():
    first = unit_bucket("exp-1", "user-1")

    assert unit_bucket("exp-1", "user-1") == first
    assert 0.0 <= first < 1.0


def test_unit_bucket__pinned_value__unchanged_so_visitors_keep_their_variant():
    # Changing the hash or its input format would silently reshuffle every live experiment.
    assert unit_bucket("exp-1", "user-1") == 0.4845635376990013


def test_unit_bucket__largest_digest__stays_below_one(monkeypatch):
    class MaxDigest:
        def __init__(self, *args, **kwargs):
            pass

        def digest(self):
            return b"\xff" * 8

    monkeypatch.setattr(hashing.hashlib, "blake2b", MaxDigest)

    assert unit_bucket("any", "unit") < 1.0


def test_unit_bucket__many_units__uniform_by_chi_square():
    buckets = np.array([unit_bucket("exp-uniform", unit) for unit in UNITS])
    counts = np.bincount((buckets * 50).astype(int), minlength=50)

    assert stats.chisquare(counts).pvalue > 1e-3
    assert buckets.min() >= 0.0 and buckets.max() < 1.0


def test_unit_bucket__two_salts__independent_buckets():
    first = np.array([unit_bucket("exp-a", unit) for unit in UNITS])
    second = np.array([unit_bucket("exp-b", unit) for unit in UNITS])
    joint = np.zeros((10, 10))
    np.add.at(joint, ((first * 10).astype(int), (second * 10).astype(int)), 1)

    # The correlation's standard error is 1/sqrt(100k) ~ 0.003.
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.015
    assert stats.chi2_contingency(joint).pvalue > 1e-3


def test_unit_bucket__uses_blake2b_of_salt_and_unit():
    digest = hashlib.blake2b(b"exp-1:user-1", digest_size=8).digest()

    assert unit_bucket("exp-1", "user-1") == (int.from_bytes(digest) >> 11) / 2**53


@pytest.mark.parametrize(
    ("u", "expected"),
    [(0.0, 0), (0.1999, 0), (0.2, 1), (0.4999, 1), (0.5, 2), (0.999999, 2)],
)
def test_pick_index__u_in_interval__returns_its_arm(u, expected):
    assert pick_index([0.2, 0.3, 0.5], u) == expected


def test_pick_index__weights_sum_below_one__last_arm_still_reachable():
    assert pick_index([0.5, 0.4999999], 0.9999999999) == 1


def test_pick_index__rounding_overflow__never_picks_zero_weight_arm():
    assert pick_index([0.5, 0.5, 0.0], 1.0) == 1


def test_pick_index__zero_weight_first_arm__skipped():
    assert pick_index([0.0, 1.0], 0.0) == 1


@pytest.mark.parametrize("weights", [[], [0.0, 0.0]])
def test_pick_index__no_positive_weight__raises(weights):
    with pytest.raises(ValueError, match="weight"):
        pick_index(weights, 0.5)


@given(
    weights=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12).filter(lambda w: sum(w) > 0),
    u=st.floats(0.0, 1.0, exclude_max=True),
)
def test_pick_index__any_weights__picks_positive_weight_arm_whose_interval_holds_u(weights, u):
    index = pick_index(weights, u)
    target = u * sum(weights)

    assert weights[index] > 0
    assert math.fsum(weights[:index]) <= target * (1 + 1e-12)


def test_pick_index__uniform_grid__frequencies_match_weights():
    weights = [0.1, 0.25, 0.05, 0.6]
    grid = (np.arange(100_000) + 0.5) / 100_000
    counts = np.bincount([pick_index(weights, u) for u in grid], minlength=4)

    assert counts / counts.sum() == pytest.approx(weights, abs=1e-4)
