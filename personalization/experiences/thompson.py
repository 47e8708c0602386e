"""Beta-Bernoulli Thompson sampling for variant allocation.

The update task turns exposure/conversion counts into allocation weights every few seconds
and decide serves from those weights with `hashing.pick_index`. Serving from precomputed
weights (probability matching in batches) rather than sampling per request keeps decide free
of numpy and of any shared mutable state, and costs little regret (see bench/bandit_sim.py).

Pure numpy, no Django import, so it is fast to test and to benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

# Production defaults, chosen with bench/bandit_sim.py (4 arms at 3.0-4.5 %, 200k decisions,
# weights refreshed every 2,000 decisions). A floor's cost grows linearly with traffic
# (floor x decisions x gap) while Thompson sampling's grows with its log: 0.005 keeps regret
# about 1.1x an ideal per-request sampler at 200k decisions and still shows every arm ~1,000
# times, enough to notice drift; 0.01 is already 1.33x and 0.05 3.5x. Burn-in is 100
# exposures per arm: one early conversion cannot swing prob-best, and it ends in the first batch.
DEFAULT_FLOOR = 0.005
DEFAULT_BURN_IN = 100
DEFAULT_DRAWS = 20_000
# Segments must differ this clearly (a one-sided 5 % test) before they stop pooling. The task
# re-tests at every refresh, so identical segments do trip it now and then; the strength it
# then estimates is large and costs nothing measurable, while z = 3 delayed segments that
# really differ (bench/bandit_sim.py).
HOMOGENEITY_Z = 1.645

RngLike = np.random.Generator | int | None
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Exposure and conversion counts of one arm."""

    exposures: int
    conversions: int

    def __post_init__(self) -> None:
        if not 0 <= self.conversions <= self.exposures:
            raise ValueError(f"conversions={self.conversions} must be between 0 and exposures={self.exposures}.")


def beta_params(arms: Sequence[ArmStats]) -> tuple[np.ndarray, np.ndarray]:
    """Posterior Beta(alpha, beta) per arm under a uniform Beta(1, 1) prior."""
    exposures, conversions = _counts(arms)
    return 1.0 + conversions, 1.0 + exposures - conversions


def prob_best_from_params(
    alpha: np.ndarray, beta: np.ndarray, *, draws: int = DEFAULT_DRAWS, rng: RngLike = None
) -> np.ndarray:
    """Monte Carlo probability that each arm has the highest rate under Beta(alpha, beta).

    Sampling is used rather than a closed form because the exact integral has no cheap form
    beyond two arms; 20,000 draws give a standard error below 0.004 per arm in a few ms.
    """
    alpha = np.asarray(alpha, dtype=float)
    beta = np.asarray(beta, dtype=float)
    if alpha.ndim != 1 or alpha.shape != beta.shape or alpha.size == 0:
        raise ValueError("alpha and beta must be equal-length, non-empty 1-D arrays.")
    generator = np.random.default_rng(rng)
    samples = generator.beta(alpha, beta, size=(draws, alpha.size))
    wins = np.bincount(samples.argmax(axis=1), minlength=alpha.size)
    return wins / draws


def prob_best(arms: Sequence[ArmStats], *, draws: int = DEFAULT_DRAWS, rng: RngLike = None) -> np.ndarray:
    """Probability that each arm is best, from its own counts."""
    alpha, beta = beta_params(arms)
    return prob_best_from_params(alpha, beta, draws=draws, rng=rng)


def apply_floor(probabilities: Sequence[float], floor: float) -> list[float]:
    """Raise every share to at least `floor`, taking the mass from the arms above it.

    Arms below the floor are pinned at it and the others are rescaled in proportion; pinning
    can push another arm under the floor, so this repeats (at most once per arm). Unlike
    mixing with uniform, it costs nothing when every arm is already above the floor.
    """
    p = np.asarray(probabilities, dtype=float)
    k = p.size
    _check_floor(floor, k)
    if not p.sum() > 0 or (p < 0).any():
        raise ValueError("probabilities must be non-negative with a positive sum.")
    pinned = np.zeros(k, dtype=bool)
    weights = p / p.sum()
    while True:
        newly_pinned = ~pinned & (weights < floor)
        if not newly_pinned.any():
            return weights.tolist()
        pinned |= newly_pinned
        free_mass = 1.0 - floor * pinned.sum()
        if pinned.all():  # only when floor * k == 1: the floor leaves no room to choose
            return [1.0 / k] * k
        weights = np.where(pinned, floor, p * (free_mass / p[~pinned].sum()))


def allocation_weights(
    arms: Sequence[ArmStats],
    *,
    floor: float = DEFAULT_FLOOR,
    burn_in: int = DEFAULT_BURN_IN,
    draws: int = DEFAULT_DRAWS,
    rng: RngLike = None,
) -> list[float]:
    """Serving weights for one bandit: uniform during burn-in, then floored prob-best.

    Burn-in holds a uniform split until every arm has `burn_in` exposures, so a lucky first
    conversion cannot starve the other arms. The floor keeps every arm learning afterwards,
    which matters when rates drift; it costs regret by design.
    """
    _check_floor(floor, len(arms))
    if min(arm.exposures for arm in arms) < burn_in:
        return [1.0 / len(arms)] * len(arms)
    return apply_floor(prob_best(arms, draws=draws, rng=rng), floor)


def pooled_segment_params(
    segment: Sequence[ArmStats],
    global_: Sequence[ArmStats],
    *,
    prior_strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Beta posterior of a segment, shrunk towards the rest of the traffic (partial pooling).

    Each arm's prior is the counts of all *other* traffic (`global_` minus the segment),
    scaled down to at most `prior_strength` exposures: the rest's conversion rate, held with
    the confidence of `prior_strength` observations. A segment with few exposures therefore
    follows the global bandit, one with many more than `prior_strength` follows its own
    data; prior_strength=0 gives independent segments and math.inf the global bandit.

    `global_` is the totals including the segment. Leaving the segment out of its own prior
    avoids counting its data twice; the difference is clamped at zero because production
    counters are updated independently and can briefly disagree.
    """
    if len(segment) != len(global_):
        raise ValueError(f"segment has {len(segment)} arms but global_ has {len(global_)}; pass the same arms.")
    if not prior_strength >= 0:
        raise ValueError(f"prior_strength={prior_strength} must be >= 0.")
    segment_exposures, segment_conversions = _counts(segment)
    global_exposures, global_conversions = _counts(global_)
    rest_exposures = np.maximum(global_exposures - segment_exposures, 0.0)
    rest_conversions = np.clip(global_conversions - segment_conversions, 0.0, rest_exposures)
    scale = np.minimum(1.0, prior_strength / np.maximum(rest_exposures, 1.0))
    segment_failures = segment_exposures - segment_conversions
    rest_failures = rest_exposures - rest_conversions
    alpha = 1.0 + segment_conversions + scale * rest_conversions
    beta = 1.0 + segment_failures + scale * rest_failures
    return alpha, beta


def estimate_prior_strength(segments: Iterable[Sequence[ArmStats]]) -> float:
    """Empirical-Bayes prior strength: how alike the segments' conversion rates are.

    Models each segment's true rate for an arm as drawn from Beta with mean m and strength
    kappa, so between-segment variance is m(1 - m) / (kappa + 1). The method-of-moments
    estimate (DerSimonian-Laird) is Pearson's chi-square for homogeneity, pooled over arms,
    minus its degrees of freedom, divided by the effective sample size.

    Unless chi-square exceeds its degrees of freedom by `HOMOGENEITY_Z` standard deviations,
    this returns math.inf: full pooling, i.e. the global bandit. Without
    that gate a handful of conversions in a tiny segment is enough to "detect" a difference
    and cut every segment loose from the global data.
    """
    counts = [_counts(arms) for arms in segments]
    exposures_by_arm = np.array([exposures for exposures, _ in counts]).T
    conversions_by_arm = np.array([conversions for _, conversions in counts]).T
    chi_square = degrees_of_freedom = effective_size = 0.0
    for n, c in zip(exposures_by_arm, conversions_by_arm, strict=True):
        n, c = n[n > 0], c[n > 0]
        total = n.sum()
        if n.size < 2 or not 0 < c.sum() < total:
            continue  # one segment, or no variance to compare: this arm carries no evidence.
        mean = c.sum() / total
        chi_square += float((n * (c / n - mean) ** 2).sum() / (mean * (1 - mean)))
        degrees_of_freedom += n.size - 1
        effective_size += total - (n**2).sum() / total
    excess = chi_square - degrees_of_freedom
    # A chi-square variable has mean df and variance 2 df.
    if degrees_of_freedom == 0 or excess <= HOMOGENEITY_Z * math.sqrt(2 * degrees_of_freedom):
        return math.inf
    # 1 / (kappa + 1) is the between-segment share of variance.
    return max(effective_size / excess - 1.0, 0.0)


def segment_allocation_weights(
    segments: Mapping[K, Sequence[ArmStats]],
    global_: Sequence[ArmStats],
    *,
    floor: float = DEFAULT_FLOOR,
    burn_in: int = DEFAULT_BURN_IN,
    prior_strength: float | None = None,
    draws: int = DEFAULT_DRAWS,
    rng: RngLike = None,
) -> dict[K, list[float]]:
    """Serving weights per segment, from pooled segment posteriors.

    `prior_strength=None` estimates it from the segments (`estimate_prior_strength`), so
    segments that respond alike behave as the global bandit and lose nothing to splitting
    the traffic, while segments that differ learn their own best arm.

    Burn-in is judged on the global counts only: a small segment is exactly the case pooling
    exists for, so it gets pooled weights as soon as the global bandit leaves burn-in rather
    than sitting on a uniform split until it has its own `burn_in` exposures.
    """
    _check_floor(floor, len(global_))
    if min(arm.exposures for arm in global_) < burn_in:
        uniform = [1.0 / len(global_)] * len(global_)
        return {key: list(uniform) for key in segments}
    if prior_strength is None:
        prior_strength = estimate_prior_strength(segments.values())
    generator = np.random.default_rng(rng)
    weights = {}
    for key, arms in segments.items():
        alpha, beta = pooled_segment_params(arms, global_, prior_strength=prior_strength)
        p = prob_best_from_params(alpha, beta, draws=draws, rng=generator)
        weights[key] = apply_floor(p, floor)
    return weights


def _counts(arms: Sequence[ArmStats]) -> tuple[np.ndarray, np.ndarray]:
    exposures = np.array([arm.exposures for arm in arms], dtype=float)
    conversions = np.array([arm.conversions for arm in arms], dtype=float)
    return exposures, conversions


def _check_floor(floor: float, arm_count: int) -> None:
    if arm_count == 0:
        raise ValueError("no arms: an allocation needs at least one arm.")
    # A small tolerance so floor=1/k (pure uniform) is accepted despite float rounding.
    if floor < 0 or floor * arm_count > 1 + 1e-12:
        raise ValueError(f"floor={floor} with {arm_count} arms must be >= 0 and at most 1/{arm_count}.")
