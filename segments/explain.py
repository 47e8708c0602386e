"""Why a person is in a segment, an intent or a score band, in words. Pure numpy, no Django.

The dashboard's Why panel (the visitor page) and the privacy export read these sentences
(segments/selectors_explain.py gathers the data). Each explanation is made only of what decided the
membership or the score, so it can be checked against the data:

- Behavior segment: the segment's card lists the behaviors that over-index in it (ratio of the
  segment's mean to the population's). The person's own behavior tokens are counted (every event once,
  no recency weight) and the card's behaviors the person shows are listed, most characteristic of the
  segment first (highest ratio), with the person's count. Someone in a segment by the overall shape
  of their behavior, with none of its listed behaviors, is told so instead of a made-up reason.
- Intent: the (up to three) texts that drove the score, stored when it was computed, and the intent's
  example phrase nearest to the strongest of them (cosine of their text vectors).
- Predictive score: the models are linear on standardised features (segments/scoring.py: logistic
  or Poisson regression), so the score's link (log-odds or log of revenue) is the intercept plus
  coefficient × standardised value per feature, exactly. A feature's contribution is that product: how
  far it moves this person's score from a person with the population's mean features. The biggest
  pushes up and down are listed. A model of another kind (none exists today) is not explained here
  rather than approximated.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from segments.embedding import _CATEGORY_KEYS, _QUERY_KEYS, behavior_tokens, token_label
from segments.embedding import _norm_key as norm_key

TOP_REASONS = 3
MAX_SEARCHES = 3
MAX_CATEGORIES = 2
# A contribution below this on the link scale (0.05 log-odds: ~1 point of a 50 % chance) moves nothing
# a reader would notice: left out of "pushed up / down by".
MIN_CONTRIBUTION = 0.05
# Every event counts once (a half-life far beyond any history), not recency weighted: counts a person
# can check against their own history.
_NO_DECAY_DAYS = 1e9

_EVENT_VERBS = {
    "page_view": "viewed pages",
    "pageview": "viewed pages",
    "product_view": "viewed products",
    "view_item": "viewed products",
    "search": "searched",
    "add_to_cart": "added items to the cart",
    "remove_from_cart": "removed items from the cart",
    "checkout": "went to checkout",
    "begin_checkout": "went to checkout",
    "purchase": "bought",
    "signup": "signed up",
}
_CATEGORY_VERBS = {
    "page_view": "viewed {c} pages",
    "pageview": "viewed {c} pages",
    "product_view": "viewed {c} products",
    "view_item": "viewed {c} products",
    "add_to_cart": "added {c} to the cart",
    "purchase": "bought {c}",
    "search": "searched in {c}",
}


@dataclass(frozen=True)
class Reason:
    """One line of an explanation: what the person did (or what moves their score) and its weight."""

    text: str
    weight: float


def _times(count: float) -> str:
    n = round(count)
    return "once" if n == 1 else f"{n} times"


def label_phrase(label: str) -> str:
    """A card feature (embedding.token_label) as words about a person: "page_view · category: yoga"
    → "viewed yoga pages", "search: trail" → "searched “trail”", "event: purchase" → "bought"."""
    if " · category: " in label:
        etype, _, category = label.partition(" · category: ")
        return _CATEGORY_VERBS.get(etype, "{e} in {c}").format(e=etype, c=category)
    kind, sep, value = label.partition(": ")
    if not sep:
        return label
    if kind == "search":
        return f"searched “{value}”"
    if kind == "category":
        return f"browsed {value}"
    if kind == "item":
        return f"looked at {value}"
    if kind == "page":
        return f"visited {value}"
    if kind == "event":
        return _EVENT_VERBS.get(value, f"{value} events")
    return label


def person_labels(events: Iterable, *, now) -> dict[str, float]:
    """How often the person shows each behavior, by the label a segment card uses (every event once)."""
    counts: dict[str, float] = {}
    for token, count in behavior_tokens(events, now=now, half_life_days=_NO_DECAY_DAYS).items():
        label = token_label(token)
        counts[label] = counts.get(label, 0.0) + count
    return counts


def segment_reasons(labels: Mapping[str, float], card: Mapping, *, top: int = TOP_REASONS) -> list[Reason]:
    """The card's over-indexing behaviors (over_index, then "more") that the person shows, most
    characteristic of the segment first; weight = the segment's ratio. Empty when they show none."""
    ratios: dict[str, float] = {}
    for entry in [*(card.get("over_index") or ()), *(card.get("more") or ())]:
        feature, ratio = entry.get("feature"), entry.get("ratio")
        if isinstance(feature, str) and isinstance(ratio, int | float) and ratio > 1:
            ratios[feature] = max(ratios.get(feature, 0.0), float(ratio))
    shown = [(ratio, labels[f], f) for f, ratio in ratios.items() if labels.get(f, 0) >= 0.5]
    shown.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return [Reason(f"{label_phrase(f)} ({_times(count)})", round(ratio, 2)) for ratio, count, f in shown[:top]]


def segment_sentence(name: str, reasons: Sequence[Reason]) -> str:
    if not reasons:
        return (
            f"In “{name}” by the overall mix of their behavior: none of the behaviors that set this segment"
            " apart stands out in their events."
        )
    listed = "; ".join(r.text for r in reasons)
    ratio = f"{reasons[0].weight:g}×"
    return f"In “{name}” because they {listed} (behaviors this segment shows up to {ratio} as often as others)."


def segment_headline(card: Mapping) -> str:
    """The one behavior that sets a segment apart, as words (for decide's reason): "" when none."""
    for entry in card.get("over_index") or ():
        if isinstance(entry.get("feature"), str):
            return label_phrase(entry["feature"])
    return ""


def _first_value(value: object) -> str | None:
    values = value if isinstance(value, list) else [value]
    return next((v.strip() for v in values if isinstance(v, str) and v.strip()), None)


def behavior_summary(events: Sequence, *, max_searches: int = MAX_SEARCHES) -> str:
    """What a person did, in one line: "searched: visa policy for Japan, travel insurance Asia; viewed 4
    hotel pages; bought twice". Events (with .type, .properties) oldest first; "" for no behavior."""
    searches: list[str] = []
    views: Counter[str] = Counter()
    bought = 0
    for event in reversed(list(events)):
        properties = event.properties if isinstance(event.properties, Mapping) else {}
        category = None
        for key, value in properties.items():
            norm = norm_key(key)
            if norm in _QUERY_KEYS and isinstance(value, str) and value.strip():
                query = " ".join(value.split())[:80]
                if query not in searches:
                    searches.append(query)
            elif norm in _CATEGORY_KEYS and category is None:
                category = _first_value(value)
        if event.type == "purchase":
            bought += 1
        elif "view" in str(event.type) and category:
            views[category] += 1
    parts = []
    if searches:
        parts.append("searched: " + ", ".join(searches[:max_searches]))
    if views:
        top = views.most_common(MAX_CATEGORIES)
        parts.append("viewed " + ", ".join(f"{n} {c} page{'s' if n != 1 else ''}" for c, n in top))
    if bought:
        parts.append("bought " + _times(bought))
    return "; ".join(parts)


def intent_sentence(
    *, name: str, score: float, threshold: float, phrases: Sequence[str], nearest_example: str | None
) -> str:
    """ "Scores 0.72 on “planning a trip” (at or above its threshold 0.35): “visa rules for japan”, …;
    nearest example phrase: “visa rules”." """
    side = "at or above" if score >= threshold else "below"
    head = f"Scores {score:.2f} on “{name}” ({side} its threshold {threshold:g})"
    if not phrases:
        return head + ": no single text of theirs stands out."
    quoted = ", ".join(f"“{p}”" for p in phrases)
    tail = f"; nearest example phrase of the intent: “{nearest_example}”" if nearest_example else ""
    return f"{head}, driven by {quoted}{tail}."


def nearest_index(vector: np.ndarray, candidates: np.ndarray) -> int | None:
    """Row of `candidates` (unit vectors) with the highest cosine to `vector`; None when there is none."""
    if not len(candidates) or not np.any(vector):
        return None
    return int(np.argmax(np.asarray(candidates, dtype=np.float32) @ np.asarray(vector, dtype=np.float32)))


# --- predictive scores ----------------------------------------------------------------------------

_COUNT_FEATURES = {
    "events_7d": "{n} events in the last 7 days",
    "events_30d": "{n} events in the last 30 days",
    "events": "{n} events in all",
    "sessions_7d": "{n} visits in the last 7 days",
    "sessions_30d": "{n} visits in the last 30 days",
    "sessions": "{n} visits in all",
}


def feature_phrase(feature: str, value: float, *, goal: str = "purchase", lookback_days: float = 180) -> str:
    """A feature of segments/scoring.py and this person's value of it, in words (counts are stored as
    log1p and shown as counts again)."""
    if feature in _COUNT_FEATURES:
        return _COUNT_FEATURES[feature].format(n=round(math.expm1(value)))
    if feature == "recency_days":
        return "no visit in the lookback" if value >= lookback_days else f"last active {value:.0f} days ago"
    if feature == "tenure_days":
        return f"first seen {value:.0f} days ago"
    if feature == "active_days_30d":
        return f"active on {value:.0f} of the last 30 days"
    if feature == "goals":
        return f"{round(math.expm1(value))} × {goal}"
    if feature == "days_since_goal":
        return f"never a {goal} in the lookback" if value >= lookback_days else f"last {goal} {value:.0f} days ago"
    if feature == "value":
        return f"{math.expm1(value):,.2f} of value in all"
    if feature.startswith("type:"):
        return f"{round(math.expm1(value))} × {feature[5:]}"
    if feature.startswith("category:"):
        return f"{value:.0%} of events in {feature[9:]}"
    return f"{feature} = {value:g}"


def score_contributions(model: Mapping, x: Sequence[float]) -> list[tuple[str, float, float]] | None:
    """(feature, this person's value, contribution on the link scale) for every feature, biggest
    push first; None for a model that is not linear on standardised features (see the module docstring)."""
    if model.get("kind") not in ("logistic", "poisson"):
        return None
    values = np.asarray(x, dtype=np.float64)
    z = (values - np.asarray(model["mean"])) / np.asarray(model["scale"])
    parts = z * np.asarray(model["coef"])
    order = np.argsort(-np.abs(parts), kind="stable")
    return [(model["features"][i], float(values[i]), float(parts[i])) for i in order]


def score_reasons(model: Mapping, x: Sequence[float], *, top: int = TOP_REASONS) -> tuple[list[Reason], list[Reason]]:
    """The features pushing this person's score up and down most (each at least MIN_CONTRIBUTION)."""
    parts = score_contributions(model, x)
    if parts is None:
        return [], []
    spec = model.get("spec") or {}
    goal, lookback = spec.get("goal", "purchase"), spec.get("lookback_days", 180)
    up, down = [], []
    for feature, value, part in parts:
        if abs(part) < MIN_CONTRIBUTION:
            continue
        reason = Reason(feature_phrase(feature, value, goal=goal, lookback_days=lookback), round(part, 3))
        (up if part > 0 else down).append(reason)
    return up[:top], down[:top]


def band(top_percent: float | None) -> str:
    """A score's place in words: "top 10 %", "top quarter", "upper half", "lower half"."""
    if top_percent is None:
        return ""
    for limit, words in ((1, "top 1 %"), (10, "top 10 %"), (25, "top quarter"), (50, "upper half")):
        if top_percent <= limit:
            return words
    return "lower half"


def score_sentence(
    *, label: str, value: float, top_percent: float | None, up: Sequence[Reason], down: Sequence[Reason]
) -> str:
    place = f", {band(top_percent)} of everyone scored" if top_percent is not None else ""
    head = f"{label} {value:.3g}{place}"
    if not up and not down:
        return f"{head}: close to an average person's; no feature moves it much."
    bits = []
    if up:
        bits.append("pushed up by " + ", ".join(r.text for r in up))
    if down:
        bits.append("pulled down by " + ", ".join(r.text for r in down))
    return f"{head}: {'; '.join(bits)} (compared with a person of average behavior)."
