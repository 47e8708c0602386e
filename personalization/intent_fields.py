"""The intent scores decide reads: the compact unit-hash field that carries them and the facts it gives.
Pure Python: no Django, no I/O.

Segments scores every profile on each of the project's named intents after a drain and writes field
"pi" of the unit hash decide reads in its one round trip; decide and the targeting conditions read it
through these functions only. The field is space-separated key=score pairs, one per intent of the
project, the score in [0, 1] with two decimals (targeting thresholds are written with two at most):

    "planning-a-trip=0.83 trail-running-gear=0 getting-married=0.12"

A person not scored (no texts yet, opted out) has no field: every intent comparison is then false.
"""

import re

UNIT_INTENTS_FIELD = "pi"
INTENT_FACT = "intent"  # conditions: intent planning-a-trip >= 0.4, read as facts["intent[]"][key]
INTENT_KEY = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?")


def intents_pack(scores: dict[str, float]) -> str:
    """The field for one person: {intent key: score in [0, 1]}."""
    pairs = (f"{key}={min(max(score, 0.0), 1.0):.2f}".replace(".00", "") for key, score in sorted(scores.items()))
    return " ".join(pairs)


def intents_parse(text: str | None) -> dict[str, dict[str, float]]:
    """{"intent[]": {key: score}} from a field, or {} when there is none. Pairs that do not read are
    left out (a hand-written or older value must not stop decide)."""
    if not text:
        return {}
    scores: dict[str, float] = {}
    for pair in text.split():
        key, _, value = pair.partition("=")
        try:
            score = float(value)
        except ValueError:
            continue
        if INTENT_KEY.fullmatch(key) and 0.0 <= score <= 1.0:
            scores[key] = score
    return {INTENT_FACT + "[]": scores}
