"""Judging a retrained score before it is promoted. Pure: numpy and scipy, no Django, no I/O.

Every figure is measured on held-out people (never fitted on) with their outcomes after the cutoff:
probability scores by AUC (with a DeLong 95 % interval), Brier score (beside the Brier of always
answering the base rate), calibration by decile and the lift of the top decile over random (with a
bootstrap interval); expected revenue by Spearman rank correlation and the share of revenue its top
decile holds (10 % is random).

`promotion_verdict` decides, and its reason is what the Scores page shows: a model is kept out when
there are too few outcomes to judge, when it is not better than random by a margin, or when, on the
same held-out people, it does worse than the model in use beyond noise (paired bootstrap).

Cross-fitted predictions (each fold scored by a model fitted without it) are judged within folds:
`groups` names each person's fold, an AUC compares a buyer only with non-buyers of the same fold and
the top decile is each fold's own top 10 %. Pooled across folds, the figures are biased below the
truth: a fold with more buyers than average leaves a training set with fewer, whose model answers
lower for the whole fold, so its buyers rank under other folds' non-buyers (on data with no signal
the pooled AUC of a one-feature model averages 0.46; tests/segments/test_scoring.py shows it).
"""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054


def _stats():
    """scipy.stats, imported when a retrain is judged rather than when the module loads: it takes about a
    second, and every process imports this module at start-up (the privacy registry's explanations)."""
    # Imported here, not at the top: see the docstring.
    from scipy import stats

    return stats


BOOTSTRAP = 300
MIN_OUTCOMES = 15  # people on each side (converted / not) in the holdout, below which nothing is judged
AUC_MARGIN = 0.55  # the point AUC a probability score must reach (0.5 is random)
SHARE_RANDOM = 0.10  # the top decile's share of revenue under random ordering


def auc_delong(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None) -> tuple[float, float]:
    """(AUC, its standard error) by DeLong's method, with midranks (ties count one half). With
    `groups`, pairs are formed only within a group: the groups' AUCs weighted by their pairs."""
    if groups is not None:
        parts = [(y[groups == g], p[groups == g]) for g in np.unique(groups)]
        pairs = np.asarray([(yg == 1).sum() * (yg == 0).sum() for yg, _ in parts], dtype=np.float64)
        if pairs.sum() == 0:
            return float("nan"), float("nan")
        weights = pairs / pairs.sum()
        found = [auc_delong(yg, pg) if w > 0 else (0.0, 0.0) for (yg, pg), w in zip(parts, weights, strict=True)]
        auc = float(sum(w * a for w, (a, _) in zip(weights, found, strict=True)))
        return auc, float(np.sqrt(sum((w * se) ** 2 for w, (_, se) in zip(weights, found, strict=True))))
    pos, neg = p[y == 1], p[y == 0]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    ranks = _stats().rankdata(np.concatenate([pos, neg]))
    v10 = (ranks[:m] - _stats().rankdata(pos)) / n
    v01 = 1.0 - (ranks[m:] - _stats().rankdata(neg)) / m
    auc = float(v10.mean())
    var = (v10.var(ddof=1) if m > 1 else 0.0) / m + (v01.var(ddof=1) if n > 1 else 0.0) / n
    return auc, float(np.sqrt(var))


def _top_decile(p: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Indices of the top 10 % by score: of everyone, or of each group on its own."""
    if groups is None:
        return np.argsort(-p, kind="stable")[: max(1, round(len(p) * 0.1))]
    return np.concatenate([np.flatnonzero(groups == g)[_top_decile(p[groups == g], None)] for g in np.unique(groups)])


def top_decile_lift(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Outcome rate among the top 10 % by score over the overall rate (1.0 = random)."""
    base = y.mean()
    if base == 0:
        return float("nan")
    return float(y[_top_decile(p, groups)].mean() / base)


def top_decile_share(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Share of the total outcome (revenue) held by the top 10 % by prediction (0.1 = random)."""
    total = y.sum()
    if total <= 0:
        return float("nan")
    return float(y[_top_decile(p, groups)].sum() / total)


def calibration_deciles(y: np.ndarray, p: np.ndarray) -> list[dict]:
    """People sorted by score in ten equal groups: each group's mean score beside its outcome rate."""
    order = np.argsort(p, kind="stable")
    return [
        {"decile": i + 1, "predicted": float(p[part].mean()), "observed": float(y[part].mean()), "people": len(part)}
        for i, part in enumerate(np.array_split(order, 10))
        if len(part)
    ]


def _interval(samples: list[float]) -> list[float]:
    finite = np.asarray([s for s in samples if np.isfinite(s)])
    if len(finite) == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]


def _bootstrap(metric, y: np.ndarray, p: np.ndarray, seed: int, groups: np.ndarray | None = None) -> list[float]:
    rng = np.random.default_rng(seed)
    n = len(y)
    draws = (rng.integers(0, n, n) for _ in range(BOOTSTRAP))
    return _interval([metric(y[i], p[i], None if groups is None else groups[i]) for i in draws])


def evaluate_probability(y: np.ndarray, p: np.ndarray, *, seed: int = 0, groups: np.ndarray | None = None) -> dict:
    """The held-out figures of a probability score (see the module docstring)."""
    auc, se = auc_delong(y, p, groups)
    base = float(y.mean()) if len(y) else float("nan")
    return {
        "people": len(y),
        "positives": int(y.sum()),
        "base_rate": base,
        "auc": auc,
        "auc_interval": [auc - Z95 * se, auc + Z95 * se],
        "brier": float(np.mean((p - y) ** 2)) if len(y) else float("nan"),
        "brier_base_rate": base * (1 - base) if len(y) else float("nan"),
        "top_decile_lift": top_decile_lift(y, p, groups),
        "top_decile_lift_interval": _bootstrap(top_decile_lift, y, p, seed, groups),
        "calibration": calibration_deciles(y, p),
    }


def _spearman(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None) -> float:
    if len(y) < 3 or np.all(y == y[0]) or np.all(p == p[0]):
        return float("nan")
    return float(_stats().spearmanr(p, y).statistic)


def evaluate_amount(y: np.ndarray, p: np.ndarray, *, seed: int = 0, groups: np.ndarray | None = None) -> dict:
    """The held-out figures of an expected amount (revenue). The rank correlation is pooled (a summary
    for the page); the verdict rests on the top-decile share, taken within `groups`."""
    return {
        "people": len(y),
        "positives": int((y > 0).sum()),
        "actual_mean": float(y.mean()) if len(y) else float("nan"),
        "predicted_mean": float(p.mean()) if len(y) else float("nan"),
        "spearman": _spearman(y, p),
        "spearman_interval": _bootstrap(_spearman, y, p, seed),
        "top_decile_share": top_decile_share(y, p, groups),
        "top_decile_share_interval": _bootstrap(top_decile_share, y, p, seed + 1, groups),
        "calibration": calibration_deciles(y, p),
    }


def _auc(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None) -> float:
    """The AUC of auc_delong without its standard error (one ranking per group): for bootstraps."""
    keys = np.zeros(len(y), dtype=np.int64) if groups is None else groups
    total = pairs = 0.0
    for g in np.unique(keys):
        yg, pg = y[keys == g], p[keys == g]
        m = float((yg == 1).sum())
        n = len(yg) - m
        if m and n:
            total += _stats().rankdata(pg)[yg == 1].sum() - m * (m + 1) / 2
            pairs += m * n
    return total / pairs if pairs else float("nan")


def _headline(y: np.ndarray, p: np.ndarray, amount: bool, groups: np.ndarray | None) -> float:
    return top_decile_share(y, p, groups) if amount else _auc(y, p, groups)


def paired_difference(
    y: np.ndarray,
    new: np.ndarray,
    current: np.ndarray,
    *,
    amount: bool,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict:
    """New minus current on the same held-out people (AUC, or top-decile revenue share), with a
    paired bootstrap interval: both models are scored on each resample, both within `groups`."""
    rng = np.random.default_rng(seed)
    n = len(y)
    samples = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, n, n)
        g = None if groups is None else groups[i]
        samples.append(_headline(y[i], new[i], amount, g) - _headline(y[i], current[i], amount, g))
    difference = _headline(y, new, amount, groups) - _headline(y, current, amount, groups)
    return {"difference": difference, "interval": _interval(samples)}


def promotion_verdict(score: str, figures: dict, comparison: dict | None, *, amount: bool) -> tuple[bool, str]:
    """(promote?, why), in words for the Scores page."""
    if amount:
        if figures["positives"] < MIN_OUTCOMES:
            return False, (
                f"kept out: only {figures['positives']} held-out people had revenue in the window; "
                f"at least {MIN_OUTCOMES} are needed to judge the model (more history or traffic)"
            )
        low = figures["top_decile_share_interval"][0]
        if not (low > SHARE_RANDOM and figures["spearman"] > 0):
            return False, (
                f"kept out: its top 10 % hold {figures['top_decile_share']:.0%} of held-out revenue "
                f"(95 % interval from {low:.0%}), not clearly above the 10 % of a random pick"
            )
    else:
        negatives = figures["people"] - figures["positives"]
        if min(figures["positives"], negatives) < MIN_OUTCOMES:
            return False, (
                f"kept out: the holdout has {figures['positives']} people with the outcome and {negatives} without; "
                f"at least {MIN_OUTCOMES} of each are needed to judge the model (more history or traffic)"
            )
        auc, low = figures["auc"], figures["auc_interval"][0]
        if not (low > 0.5 and auc >= AUC_MARGIN):
            return False, (
                f"kept out: holdout AUC {auc:.3f} (95 % interval from {low:.3f}) is not above random "
                f"(0.5) by the margin required (AUC at least {AUC_MARGIN} and the interval above 0.5)"
            )
    if comparison is not None and comparison["interval"][1] < 0:
        what = "top-decile revenue share" if amount else "AUC"
        low, high = comparison["interval"]
        return False, (
            f"kept out: on the same held-out people its {what} is {comparison['difference']:+.3f} against the "
            f"model in use (95 % interval {low:+.3f} to {high:+.3f}): worse beyond noise, so the model in use stays"
        )
    if amount:
        return True, f"promoted: its top 10 % hold {figures['top_decile_share']:.0%} of held-out revenue (random: 10 %)"
    return True, (
        f"promoted: holdout AUC {figures['auc']:.3f} "
        f"({figures['auc_interval'][0]:.3f} to {figures['auc_interval'][1]:.3f}), "
        f"top decile {figures['top_decile_lift']:.1f}× the average rate"
    )
