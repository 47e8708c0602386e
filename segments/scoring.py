"""Predictive scores, the pure part: event history -> features as of a moment -> model -> predictions.
No Django, no I/O (segments/services/scores.py reads the events and writes the scores).

Events are held column-wise (`EventTable`: one row per event, in profile then time order, as
personalization's `profiles_behavior` yields them), so features at any cutoff are a few numpy
bincounts over a mask instead of a Python loop per person: the same table gives the training
features (as of a past cutoff), the labels (the window after it) and today's features for scoring.

A model is plain JSON (standardisation, coefficients, the feature spec it was fitted with), not a
pickle: a stored model can be read, diffed and shown, and loading one runs no code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

DAY = 86400.0
SESSION_GAP = 30 * 60.0  # as the live session state: 30 minutes without an event ends a visit
LOOKBACK_DAYS = 180  # behavior older than this describes someone else
TOP_TYPES = 12
TOP_CATEGORIES = 15

CLASSIFIERS = ("likely_to_buy", "lapse_risk")
REGRESSORS = ("expected_revenue",)


@dataclass
class EventTable:
    """Every event of the people read, column-wise. `profiles[i]` is the profile id of index i."""

    profiles: np.ndarray  # int64, one per person
    person: np.ndarray  # int32 index into profiles, one per event
    ts: np.ndarray  # float64 unix seconds
    etype: np.ndarray  # int32 code into types
    category: np.ndarray  # int32 code into categories, -1 for none
    value: np.ndarray  # float64, 0 when the event has none
    types: list[str]
    categories: list[str]


def event_table(people: Iterable[tuple[int, list[tuple]]]) -> EventTable:
    """Build the table from (profile id, [(type, ts, properties, value), ...] in time order)."""
    profiles, person, ts, etype, category, value = [], [], [], [], [], []
    type_codes: dict[str, int] = {}
    category_codes: dict[str, int] = {}
    for index, (profile_id, events) in enumerate(people):
        profiles.append(profile_id)
        for kind, moment, properties, amount in events:
            person.append(index)
            ts.append(moment.timestamp())
            etype.append(type_codes.setdefault(kind, len(type_codes)))
            name = properties.get("category") if isinstance(properties, dict) else None
            category.append(category_codes.setdefault(name, len(category_codes)) if isinstance(name, str) else -1)
            value.append(float(amount) if amount else 0.0)
    return EventTable(
        profiles=np.asarray(profiles, dtype=np.int64),
        person=np.asarray(person, dtype=np.int32),
        ts=np.asarray(ts, dtype=np.float64),
        etype=np.asarray(etype, dtype=np.int32),
        category=np.asarray(category, dtype=np.int32),
        value=np.asarray(value, dtype=np.float64),
        types=list(type_codes),
        categories=list(category_codes),
    )


def feature_spec(table: EventTable, *, goal: str, before: float) -> dict:
    """Which event types and categories get a column: the most frequent before `before` (never
    chosen with the label window in view)."""
    mask = table.ts < before
    type_counts = np.bincount(table.etype[mask], minlength=len(table.types))
    cats = table.category[mask]
    cat_counts = np.bincount(cats[cats >= 0], minlength=len(table.categories))
    types = [table.types[i] for i in np.argsort(-type_counts, kind="stable")[:TOP_TYPES] if type_counts[i] > 0]
    categories = [
        table.categories[i] for i in np.argsort(-cat_counts, kind="stable")[:TOP_CATEGORIES] if cat_counts[i] > 0
    ]
    return {"goal": goal, "types": types, "categories": categories, "lookback_days": LOOKBACK_DAYS}


def feature_names(spec: dict) -> list[str]:
    base = [
        "recency_days",
        "tenure_days",
        "events_7d",
        "events_30d",
        "events",
        "sessions_7d",
        "sessions_30d",
        "sessions",
        "active_days_30d",
        "goals",
        "days_since_goal",
        "value",
    ]
    return base + [f"type:{t}" for t in spec["types"]] + [f"category:{c}" for c in spec["categories"]]


def _codes(names: list[str], wanted: list[str]) -> np.ndarray:
    """For each code of the table's `names`, its column among `wanted` (-1 when not wanted)."""
    column = {name: i for i, name in enumerate(wanted)}
    return np.asarray([column.get(name, -1) for name in names] + [-1], dtype=np.int32)


def features_at(table: EventTable, *, cutoff: float, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """(features of every person as of `cutoff`, whether the person had any event before it).
    Counts are log1p'd: a person with 400 page views is not forty times one with 10."""
    n = len(table.profiles)
    lookback = spec.get("lookback_days", LOOKBACK_DAYS) * DAY
    m = (table.ts < cutoff) & (table.ts >= cutoff - lookback)
    who, ts, kind, cat, value = table.person[m], table.ts[m], table.etype[m], table.category[m], table.value[m]

    def count(mask=None) -> np.ndarray:
        return np.bincount(who if mask is None else who[mask], minlength=n).astype(np.float64)

    events = count()
    present = events > 0
    last = np.full(n, -np.inf)
    np.maximum.at(last, who, ts)
    first = np.full(n, np.inf)
    np.minimum.at(first, who, ts)
    recent7, recent30 = ts >= cutoff - 7 * DAY, ts >= cutoff - 30 * DAY
    # Rows keep profile-then-time order, so a visit starts where the person changes or a gap opens.
    starts = np.ones(len(ts), dtype=bool)
    if len(ts) > 1:
        starts[1:] = (who[1:] != who[:-1]) | (ts[1:] - ts[:-1] > SESSION_GAP)
    day_keys = np.unique(who[recent30].astype(np.int64) * 100_000 + (ts[recent30] // DAY).astype(np.int64))
    active_days = np.bincount((day_keys // 100_000).astype(np.int64), minlength=n).astype(np.float64)
    goal_code = table.types.index(spec["goal"]) if spec["goal"] in table.types else -2
    goal = kind == goal_code
    last_goal = np.full(n, -np.inf)
    np.maximum.at(last_goal, who[goal], ts[goal])
    span = lookback / DAY
    recency = np.where(present, (cutoff - last) / DAY, span)
    tenure = np.where(present, (cutoff - first) / DAY, 0.0)
    since_goal = np.where(np.isfinite(last_goal), (cutoff - last_goal) / DAY, span)
    columns = [
        recency,
        tenure,
        np.log1p(count(recent7)),
        np.log1p(count(recent30)),
        np.log1p(events),
        np.log1p(count(starts & recent7)),
        np.log1p(count(starts & recent30)),
        np.log1p(count(starts)),
        active_days,
        np.log1p(count(goal)),
        since_goal,
        np.log1p(np.bincount(who, weights=np.maximum(value, 0.0), minlength=n)),
    ]
    type_col = _codes(table.types, spec["types"])[kind]
    k = len(spec["types"])
    typed = type_col >= 0
    by_type = np.bincount(who[typed] * k + type_col[typed], minlength=n * k).reshape(n, k) if k else np.zeros((n, 0))
    cat_col = _codes(table.categories, spec["categories"])[np.where(cat >= 0, cat, -1)]
    c = len(spec["categories"])
    has_cat = cat_col >= 0
    by_cat = np.bincount(who[has_cat] * c + cat_col[has_cat], minlength=n * c).reshape(n, c) if c else np.zeros((n, 0))
    # Shares, not counts: which categories a person browses says what they are after, apart from how much.
    shares = by_cat / np.maximum(events, 1.0)[:, None]
    X = np.column_stack([*columns, np.log1p(by_type), shares]) if n else np.zeros((0, len(feature_names(spec))))
    return X, present


def labels_after(table: EventTable, *, cutoff: float, horizon_days: float, goal: str) -> dict[str, np.ndarray]:
    """What happened in [cutoff, cutoff + horizon): converted on the goal, revenue (sum of values), lapsed."""
    n = len(table.profiles)
    w = (table.ts >= cutoff) & (table.ts < cutoff + horizon_days * DAY)
    who = table.person[w]
    goal_code = table.types.index(goal) if goal in table.types else -2
    converted = np.bincount(who[table.etype[w] == goal_code], minlength=n) > 0
    revenue = np.bincount(who, weights=np.maximum(table.value[w], 0.0), minlength=n)
    returned = np.bincount(who, minlength=n) > 0
    return {
        "likely_to_buy": converted.astype(np.float64),
        "expected_revenue": revenue,
        "lapse_risk": (~returned).astype(np.float64),
    }


def model_fit(score: str, X: np.ndarray, y: np.ndarray, *, spec: dict, horizon_days: float) -> dict:
    """A logistic regression (probability scores) or a Poisson regression (expected revenue: a log
    link keeps it positive and fits the mean, not the median of a mostly-zero amount), on
    standardised features, as JSON."""
    # One thread for OpenMP and BLAS: a fit here is ~30 coefficients over a few thousand people, each
    # L-BFGS step microseconds of work, and waking a second thread for every step (the loss gradient's
    # OpenMP loop, the BLAS calls) cost up to 9 ms a step on a busy 2-core server where web, database
    # and worker share the cores: a 1,500-person score run's 18 fits took 40 s, now 1.6 s. Same
    # coefficients (checked bit for bit on the demo-sized problem).
    with threadpool_limits(limits=1):
        return _model_fit(score, X, y, spec=spec, horizon_days=horizon_days)


def _model_fit(score: str, X: np.ndarray, y: np.ndarray, *, spec: dict, horizon_days: float) -> dict:
    # Imported here, not at the top: scikit-learn (with the scipy and pandas it loads) takes ~1.5 s to
    # import, and this module is imported at start-up by every process (through the privacy registry's
    # explanations), while only a retrain fits a model. Scoring reads the stored coefficients with numpy.
    from sklearn.linear_model import LogisticRegression, PoissonRegressor

    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    Z = (X - mean) / scale
    if score in REGRESSORS:
        # Fitted on revenue in units of its mean (the log link then starts near 0): on raw amounts in
        # the hundreds L-BFGS took ~200 iterations and 10 s per fit on the 3,000-person demo.
        unit = float(y.mean()) if y.mean() > 0 else 1.0
        fitted = PoissonRegressor(alpha=1e-3, max_iter=300).fit(Z, y / unit)
        coef, intercept, kind = fitted.coef_, float(fitted.intercept_) + np.log(unit), "poisson"
    else:
        fitted = LogisticRegression(C=1.0, max_iter=1000).fit(Z, y.astype(int))
        coef, intercept, kind = fitted.coef_[0], float(fitted.intercept_[0]), "logistic"
    return {
        "score": score,
        "kind": kind,
        "features": feature_names(spec),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": coef.tolist(),
        "intercept": intercept,
        "spec": spec,
        "horizon_days": horizon_days,
    }


def model_predict(model: dict, X: np.ndarray) -> np.ndarray:
    z = (X - np.asarray(model["mean"])) / np.asarray(model["scale"]) @ np.asarray(model["coef"]) + model["intercept"]
    if model["kind"] == "poisson":
        return np.exp(np.clip(z, -50, 50))
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def model_drivers(model: dict, top: int = 5) -> list[dict]:
    """The features that move the score most (standardised coefficients), for the page."""
    order = np.argsort(-np.abs(np.asarray(model["coef"])))[:top]
    return [{"feature": model["features"][i], "weight": round(float(model["coef"][i]), 3)} for i in order]


def top_percent(values: np.ndarray) -> np.ndarray:
    """Each person's place from the top as a percent of everyone scored: the highest is near 0,
    the median 50 (ties share the better place)."""
    n = len(values)
    if n == 0:
        return np.zeros(0)
    ascending = np.sort(values)
    # How many score strictly higher, plus one: the person's best rank among equals.
    higher = n - np.searchsorted(ascending, values, side="right")
    return 100.0 * (higher + 1) / n


FOLDS = 5


def fold_of(profile_ids: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Each person's fold: a fixed hash of the profile id, so a person keeps their fold across retrains."""
    return ((profile_ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1_000_003) % np.uint64(folds)).astype(
        np.int64
    )


def holdout_mask(profile_ids: np.ndarray, share: float = 0.3) -> np.ndarray:
    """Held-out people: a fixed hash of the profile id, the same person on the same side every time."""
    mixed = (profile_ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1000)
    return mixed < np.uint64(int(share * 1000))


def out_of_fold(score: str, X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, spec: dict, horizon_days: float):
    """Predictions for every person from a model fitted without their fold (cross-fitting): the whole
    population is held out once, which gives the judge several times the outcomes of a single split."""
    predicted = np.full(len(y), np.nan)
    for fold in np.unique(folds):
        train = folds != fold
        if score not in REGRESSORS and len(np.unique(y[train])) < 2:
            continue
        model = model_fit(score, X[train], y[train], spec=spec, horizon_days=horizon_days)
        predicted[~train] = model_predict(model, X[~train])
    return predicted
