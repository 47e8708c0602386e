"""Named intents: a marketer's need in plain words ("planning a trip": visa rules, travel insurance,
hotel near the station) and how strongly each person's recent words express it. Pure numpy, no Django.

An intent is encoded once, when it is saved: its example phrases, each read in the context of the
intent's name ("visa rules (planning a trip)"), averaged into one unit prototype. The context matters
because an example alone is ambiguous ("caterer for 120 guests" is cooking or a wedding); the rule was
chosen on half of the labelled intents and reported on all (tests/segments/test_intents.py,
docs/user-guide.md "Intents").

A text's score is its cosine to the prototype on a 0-to-1 scale: 0 where everyday shop words sit
("order status"), 1 where an intent's own examples sit (SCALE, one pair per encoder). The scale is the
same for every intent on purpose: calibrating each intent to its own examples and background placed
fewer queries on the half the rule was chosen on (83.3 % against 86.1 %), because an intent with tight
examples then inflates everything near it. So a person's best intent is also the nearest prototype.

A person's score is the highest score of their texts, each weighed by its recency (half-life from the
moment of scoring, so an intent fades when it is no longer expressed) and its role (names of products
and categories count NAME_ROLE of free text); the three texts that weighed most are kept as the
reason. The highest, not the mean: one clear search for a visa says "planning a trip" whatever else the
person browsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from segments.meaning import event_texts
from segments.text_encoder import prototype

MIN_EXAMPLES = 3
MAX_EXAMPLES = 20
MAX_PHRASE_CHARS = 200
MAX_NAME_CHARS = 80
DEFAULT_THRESHOLD = 0.4
TOP_PHRASES = 3
HALF_LIFE_DAYS = 7.0
NAME_ROLE = 0.6
# Texts older than this many half-lives weigh under 1 %: not read.
MAX_AGE_HALF_LIVES = 7
KEY_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?")

# Where the 0-to-1 scale of each encoder runs: the median cosine of everyday shop queries that express
# no need in particular ("order status", "return policy", in several languages) to an intent's
# prototype, and the median cosine of an intent's own example phrases to it; measured on the six
# labelled intents the rule was chosen on (tests/data/intent_queries.json, even positions).
SCALE = {"use-multilingual-v3": (0.04, 0.60), "wordllama-l2-supercat-256": (0.04, 0.60)}


@dataclass(frozen=True)
class IntentModel:
    """An intent ready to score texts: unit prototype and the two cosines its scale runs between."""

    key: str
    prototype: np.ndarray
    low: float
    high: float

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated scores in [0, 1] of unit text vectors (rows); a zero row scores 0."""
        if not len(vectors):
            return np.zeros(0, dtype=np.float32)
        cosine = np.asarray(vectors, dtype=np.float32) @ self.prototype
        scaled = (cosine - self.low) / max(self.high - self.low, 1e-6)
        scaled[~np.any(vectors, axis=1)] = 0.0
        return np.clip(scaled, 0.0, 1.0)


def intent_texts(name: str, examples: Sequence[str]) -> list[str]:
    """What the prototype is made of: each example read in the context of the intent's name."""
    return [f"{example} ({name})" for example in examples]


def intent_model(
    *, key: str, name: str, examples: Sequence[str], encode: Callable[[list[str]], np.ndarray], encoder: str
) -> IntentModel:
    """The intent's prototype (one encoder call) on its encoder's scale."""
    low, high = SCALE.get(encoder, SCALE["use-multilingual-v3"])
    return IntentModel(key=key, prototype=prototype(encode(intent_texts(name, examples))), low=low, high=high)


def intents_assign(models: Sequence[IntentModel], vectors: np.ndarray) -> np.ndarray:
    """Index of the intent each text vector scores highest on (the acceptance test's rule)."""
    return np.argmax(np.stack([m.scores(vectors) for m in models], axis=1), axis=1)


@dataclass(frozen=True)
class WeightedText:
    """One text of a person's events and the weight of its recency and role."""

    text: str
    weight: float


def recent_texts(events: Iterable, *, now: datetime, half_life_days: float = HALF_LIFE_DAYS) -> list[WeightedText]:
    """The texts of a person's events (objects with .ts and .properties), each with its heaviest
    weight: recency (half-life counted back from `now`) times role (1 free text, NAME_ROLE names)."""
    weights: dict[str, float] = {}
    for event in events:
        age_days = max((now - event.ts).total_seconds(), 0.0) / 86400.0
        if age_days > MAX_AGE_HALF_LIVES * half_life_days:
            continue
        recency = 0.5 ** (age_days / half_life_days)
        for text, role in event_texts(event.properties):
            weight = recency * (1.0 if role >= 1.0 else NAME_ROLE)
            weights[text] = max(weights.get(text, 0.0), weight)
    return [WeightedText(t, w) for t, w in weights.items()]


def profile_scores(
    texts: Sequence[WeightedText], vectors: Mapping[str, np.ndarray], models: Sequence[IntentModel]
) -> dict[str, tuple[float, list[str]]]:
    """intent key → (score in [0, 1], the up to TOP_PHRASES texts that drove it, strongest first) for
    one person. Texts without a vector are skipped; a person without texts scores 0 on every intent."""
    return profiles_scores([texts], vectors, models)[0]


def profiles_scores(
    people: Sequence[Sequence[WeightedText]], vectors: Mapping[str, np.ndarray], models: Sequence[IntentModel]
) -> list[dict[str, tuple[float, list[str]]]]:
    """profile_scores for many people at once: every distinct text is scored on every intent in one
    matrix product (queries repeat across people), then each person takes the weighted maximum."""
    index: dict[str, int] = {}
    for person in people:
        for t in person:
            if t.text in vectors:
                index.setdefault(t.text, len(index))
    empty = {m.key: (0.0, []) for m in models}
    if not index or not models:
        return [dict(empty) for _ in people]
    texts = list(index)
    matrix = np.stack([vectors[t] for t in texts])
    table = np.stack([m.scores(matrix) for m in models], axis=1)  # distinct texts × intents
    keys = [m.key for m in models]
    out = []
    for person in people:
        rows = [(index[t.text], t.weight) for t in person if t.text in index]
        if not rows:
            out.append(dict(empty))
            continue
        ids = np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows))
        weights = np.fromiter((w for _, w in rows), dtype=np.float32, count=len(rows))
        contribution = table[ids] * weights[:, None]
        order = np.argsort(-contribution, axis=0, kind="stable")[:TOP_PHRASES]
        best = contribution[order[0], np.arange(len(keys))]
        result = {}
        for column, key in enumerate(keys):
            drivers = [texts[ids[i]] for i in order[:, column] if contribution[i, column] > 0]
            result[key] = (round(float(best[column]), 4), drivers)
        out.append(result)
    return out


def key_from_name(name: str) -> str:
    """A key for a name: "Planning a trip!" → "planning-a-trip" (the form a condition names it by)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")[:48].strip("-")
    return slug or "intent"
