"""The pure score model: features as of a cutoff, labels after it, the JSON model, and the judge
that keeps a worse model out (segments/scoring.py, segments/scoring_eval.py)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from segments import scoring, scoring_eval

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(days: float, minutes: float = 0) -> datetime:
    return T0 + timedelta(days=days, minutes=minutes)


def _world(n: int, seed: int) -> tuple[scoring.EventTable, float]:
    """People whose visit rate (hidden) drives both their past and their buying after day 20."""
    rng = np.random.default_rng(seed)
    people = []
    for pid in range(1, n + 1):
        rate = rng.gamma(1.5, 0.15)  # visits per day
        events = []
        for day in range(40):
            if rng.random() < rate:
                events.append(("page_view", _at(day, rng.random() * 600), {"category": "shoes"}, None))
                if rng.random() < 0.3:
                    events.append(("purchase", _at(day, 700), {}, 50.0 + 100 * rng.random()))
        people.append((pid, events))
    return scoring.event_table(people), _at(20).timestamp()


def test_features_at__small_history__counts_recency_sessions_and_goals():
    table = scoring.event_table(
        [
            (
                7,
                [
                    ("page_view", _at(0), {"category": "shoes"}, None),
                    ("page_view", _at(0, 10), {"category": "shoes"}, None),  # same visit
                    ("purchase", _at(3), {"category": "socks"}, 40.0),  # a second visit
                    ("page_view", _at(12), {}, None),  # after the cutoff: not a feature
                ],
            ),
            (9, [("page_view", _at(11), {}, None)]),  # no event before the cutoff
        ]
    )
    spec = scoring.feature_spec(table, goal="purchase", before=_at(10).timestamp())
    X, present = scoring.features_at(table, cutoff=_at(10).timestamp(), spec=spec)
    row = dict(zip(scoring.feature_names(spec), X[0], strict=True))
    assert present.tolist() == [True, False]
    assert row["recency_days"] == pytest.approx(7.0)
    assert row["tenure_days"] == pytest.approx(10.0)
    assert row["events"] == pytest.approx(np.log1p(3))
    assert row["sessions"] == pytest.approx(np.log1p(2))
    assert row["goals"] == pytest.approx(np.log1p(1))
    assert row["days_since_goal"] == pytest.approx(7.0)
    assert row["category:shoes"] == pytest.approx(2 / 3)
    labels = scoring.labels_after(table, cutoff=_at(10).timestamp(), horizon_days=5, goal="purchase")
    assert labels["likely_to_buy"].tolist() == [0.0, 0.0]
    assert labels["lapse_risk"].tolist() == [0.0, 0.0]  # both came back within 5 days


def test_top_percent__ranks_from_the_top__ties_share_the_better_place():
    assert scoring.top_percent(np.array([0.9, 0.1, 0.5, 0.5])).tolist() == [25.0, 100.0, 50.0, 50.0]


def test_auc_delong__matches_sklearn_and_its_interval_covers_it():
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.3).astype(float)
    p = np.round(y * 0.3 + rng.random(500), 2)  # ties on purpose
    auc, se = scoring_eval.auc_delong(y, p)
    assert auc == pytest.approx(roc_auc_score(y, p))
    assert 0 < se < 0.05


def test_model_json__predicts_as_the_fitted_sklearn_model():
    table, cutoff = _world(400, seed=1)
    spec = scoring.feature_spec(table, goal="purchase", before=cutoff)
    X, _ = scoring.features_at(table, cutoff=cutoff, spec=spec)
    y = scoring.labels_after(table, cutoff=cutoff, horizon_days=10, goal="purchase")["likely_to_buy"]
    model = scoring.model_fit("likely_to_buy", X, y, spec=spec, horizon_days=10)
    Z = (X - X.mean(axis=0)) / np.where(X.std(axis=0) == 0, 1, X.std(axis=0))
    reference = LogisticRegression(C=1.0, max_iter=1000).fit(Z, y.astype(int)).predict_proba(Z)[:, 1]
    assert np.allclose(scoring.model_predict(model, X), reference, atol=1e-6)


def _fit_and_judge(table, cutoff, *, shuffle: bool, current: dict | None = None):
    spec = scoring.feature_spec(table, goal="purchase", before=cutoff)
    X, present = scoring.features_at(table, cutoff=cutoff, spec=spec)
    y = scoring.labels_after(table, cutoff=cutoff, horizon_days=10, goal="purchase")["likely_to_buy"]
    held = scoring.holdout_mask(table.profiles) & present
    train = ~scoring.holdout_mask(table.profiles) & present
    y_train = np.random.default_rng(5).permutation(y[train]) if shuffle else y[train]
    model = scoring.model_fit("likely_to_buy", X[train], y_train, spec=spec, horizon_days=10)
    p = scoring.model_predict(model, X[held])
    figures = scoring_eval.evaluate_probability(y[held], p)
    comparison = None
    if current is not None:
        comparison = scoring_eval.paired_difference(y[held], p, scoring.model_predict(current, X[held]), amount=False)
    return model, figures, scoring_eval.promotion_verdict("likely_to_buy", figures, comparison, amount=False)


def test_promotion__real_labels__promoted_with_auc_above_random():
    table, cutoff = _world(3000, seed=2)
    _, figures, (promote, why) = _fit_and_judge(table, cutoff, shuffle=False)
    assert promote, why
    assert figures["auc_interval"][0] > 0.6
    assert figures["top_decile_lift"] > 1.5
    assert why.startswith("promoted: holdout AUC")


def test_promotion__model_trained_on_shuffled_labels__is_refused_with_the_reason():
    table, cutoff = _world(3000, seed=2)
    _, figures, (promote, why) = _fit_and_judge(table, cutoff, shuffle=True)
    assert not promote
    assert "is not above random (0.5) by the margin required" in why, why
    assert figures["auc"] < scoring_eval.AUC_MARGIN


def test_promotion__worse_than_the_model_in_use_beyond_noise__keeps_the_model_in_use():
    table, cutoff = _world(3000, seed=2)
    good, _, _ = _fit_and_judge(table, cutoff, shuffle=False)
    # A model that knows only how long ago the visitor came: above random, below the full model.
    weak = dict(good, coef=[-1.0 if name == "recency_days" else 0.0 for name in good["features"]])
    X, present = scoring.features_at(table, cutoff=cutoff, spec=good["spec"])
    held = scoring.holdout_mask(table.profiles) & present
    y = scoring.labels_after(table, cutoff=cutoff, horizon_days=10, goal="purchase")["likely_to_buy"][held]
    weak_p, good_p = scoring.model_predict(weak, X[held]), scoring.model_predict(good, X[held])
    figures = scoring_eval.evaluate_probability(y, weak_p)
    comparison = scoring_eval.paired_difference(y, weak_p, good_p, amount=False)
    promote, why = scoring_eval.promotion_verdict("likely_to_buy", figures, comparison, amount=False)
    assert figures["auc"] >= scoring_eval.AUC_MARGIN, "the weak model passes the margin on its own"
    assert not promote
    assert "worse beyond noise, so the model in use stays" in why, why
    # The other way round, the better model replaces the weaker one in use.
    comparison = scoring_eval.paired_difference(y, good_p, weak_p, amount=False)
    promote, why = scoring_eval.promotion_verdict(
        "likely_to_buy", scoring_eval.evaluate_probability(y, good_p), comparison, amount=False
    )
    assert promote, why


def test_promotion__too_few_outcomes__refused_saying_how_many():
    y = np.zeros(200)
    y[:5] = 1
    figures = scoring_eval.evaluate_probability(y, np.linspace(1, 0, 200))
    promote, why = scoring_eval.promotion_verdict("likely_to_buy", figures, None, amount=False)
    assert not promote
    assert "5 people with the outcome" in why


def test_revenue__poisson_model_ranks_spenders__top_decile_share_above_random():
    table, cutoff = _world(3000, seed=4)
    spec = scoring.feature_spec(table, goal="purchase", before=cutoff)
    X, present = scoring.features_at(table, cutoff=cutoff, spec=spec)
    y = scoring.labels_after(table, cutoff=cutoff, horizon_days=10, goal="purchase")["expected_revenue"]
    held = scoring.holdout_mask(table.profiles) & present
    model = scoring.model_fit("expected_revenue", X[~held & present], y[~held & present], spec=spec, horizon_days=10)
    p = scoring.model_predict(model, X[held])
    figures = scoring_eval.evaluate_amount(y[held], p)
    promote, why = scoring_eval.promotion_verdict("expected_revenue", figures, None, amount=True)
    assert promote, why
    assert figures["top_decile_share_interval"][0] > 0.1
    # A Poisson fit matches the mean amount, not a median of mostly-zero revenue.
    assert figures["predicted_mean"] == pytest.approx(figures["actual_mean"], rel=0.25)


def _cross_fitted(seed: int, signal: float, n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """`n` people, 5 % buyers, one feature whose true AUC is known (0.5 when `signal` is 0),
    predicted out of fold as the retrain does."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1))
    y = (rng.random(n) < 1 / (1 + np.exp(2.9 - signal * x[:, 0]))).astype(float)
    folds = scoring.fold_of(np.arange(1, n + 1))
    spec = {"types": [], "categories": []}
    p = scoring.out_of_fold("likely_to_buy", x, y, folds, spec=spec, horizon_days=7)
    return y, p, folds, (roc_auc_score(y, x[:, 0]) if signal else 0.5)


def test_auc__cross_fitted_with_no_signal__pooled_leans_below_random__within_folds_does_not():
    # A fold with more buyers leaves a training set with fewer, whose model answers lower for the whole
    # fold: pooled, its buyers rank under other folds' non-buyers. Within folds that cannot happen.
    pooled, within = [], []
    for seed in range(16):
        y, p, folds, _ = _cross_fitted(seed, signal=0.0)
        pooled.append(scoring_eval.auc_delong(y, p)[0])
        within.append(scoring_eval.auc_delong(y, p, folds)[0])
    print(f"no signal, 16 draws: pooled AUC {np.mean(pooled):.3f}, within folds {np.mean(within):.3f}")
    assert np.mean(pooled) < 0.48
    assert np.mean(within) == pytest.approx(0.5, abs=0.015)


def test_auc__within_folds__pairs_weighted_and_a_signal_is_found():
    y, p, folds, truth = _cross_fitted(1, signal=0.8, n=3000)
    auc, se = scoring_eval.auc_delong(y, p, folds)
    parts = [(roc_auc_score(y[folds == k], p[folds == k]), y[folds == k]) for k in range(scoring.FOLDS)]
    weights = np.array([(yk == 1).sum() * (yk == 0).sum() for _, yk in parts], dtype=float)
    assert auc == pytest.approx(np.dot(weights / weights.sum(), [a for a, _ in parts]))
    assert auc - 1.96 * se < truth < auc + 1.96 * se and auc - 1.96 * se > 0.5
    figures = scoring_eval.evaluate_probability(y, p, groups=folds)
    assert figures["auc"] == auc and figures["top_decile_lift_interval"][0] > 1
