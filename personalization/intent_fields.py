"""The intent scores decide reads: the compact unit-hash field that carries them and the facts it gives.
Pure Python: no Django, no I/O.

Segments scores every profile on each of the project's named intents after a drain and writes field
"pi" of the unit hash decide reads in its one round trip; decide and the targeting conditions read it
through these functions only. The field is space-separated key=score pairs, one per intent of the
project, the score in [0, 1] with two decimals (targeting thresholds are written with two at most):

    "planning-a-trip=0.83 trail-running-gear=0 getting-married=0.12"

A person not scored (no texts yet, opted out) has no field: every intent comparison is then false.

After the scores, the field may carry for up to WHY_MAX intents (the highest scores) the text that
drove each most, percent-encoded, for decide's `explain: true` ("because you looked for …"):

    "planning-a-trip=0.83 getting-married=0.12 why:planning-a-trip=visa%20rules%20for%20japan"

In this field, not another one, so that everything that deletes, exports or objects to intent scores
takes the reasons with them; a reader of the scores skips the "why:" pairs.
"""

import re
from urllib.parse import quote, unquote

UNIT_INTENTS_FIELD = "pi"
INTENT_FACT = "intent"  # conditions: intent planning-a-trip >= 0.35, read as facts["intent[]"][key]
INTENT_KEY = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?")
WHY_PREFIX = "why:"
WHY_MAX = 3  # intents whose reason is kept, the highest scores first
WHY_MAX_CHARS = 60  # of each reason text, before encoding


def intents_pack(scores: dict[str, float], why: dict[str, str] | None = None) -> str:
    """The field for one person: {intent key: score in [0, 1]}, and optionally {intent key: the text
    that drove it} (kept for the WHY_MAX highest scores, each cut to WHY_MAX_CHARS)."""
    pairs = [f"{key}={min(max(score, 0.0), 1.0):.2f}".replace(".00", "") for key, score in sorted(scores.items())]
    if why:
        strongest = sorted((k for k, text in why.items() if text and k in scores), key=lambda k: (-scores[k], k))
        for key in strongest[:WHY_MAX]:
            pairs.append(f"{WHY_PREFIX}{key}={quote(why[key][:WHY_MAX_CHARS].strip(), safe='')}")
    return " ".join(pairs)


def intents_why(text: str | None) -> dict[str, str]:
    """{intent key: the text that drove its score} from a field (only decide's explain reads it)."""
    found: dict[str, str] = {}
    for pair in (text or "").split():
        if pair.startswith(WHY_PREFIX):
            key, _, value = pair[len(WHY_PREFIX) :].partition("=")
            if INTENT_KEY.fullmatch(key) and value:
                found[key] = unquote(value)[:WHY_MAX_CHARS]
    return found


def intents_parse(text: str | None) -> dict[str, dict[str, float]]:
    """{"intent[]": {key: score}} from a field, or {} when there is none. Pairs that do not read are
    left out (a hand-written or older value must not stop decide)."""
    if not text:
        return {}
    scores: dict[str, float] = {}
    for pair in text.split():
        if pair.startswith(WHY_PREFIX):
            continue
        key, _, value = pair.partition("=")
        try:
            score = float(value)
        except ValueError:
            continue
        if INTENT_KEY.fullmatch(key) and 0.0 <= score <= 1.0:
            scores[key] = score
    return {INTENT_FACT + "[]": scores}
