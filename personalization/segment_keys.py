"""The format of segment keys, in one place. Pure Python: no Django, no I/O.

A clustering run's segments are keyed `b<run id>.<index>` (b12.3); a per-segment bandit names a
run as its segment source `run:<run id>`, which the engine reads as the prefix `segs:b<run id>.` of
the unit hash's space-separated "segs" field. Segments, experiences, decide and lift all read keys
through these functions, so the format can change here only.

A per-segment bandit may also learn on the visitor's live state: `live:stage` (the journey stage),
`live:visitor` (new or returning) or `live:first_touch` (the first-touch channel). The engine reads
the value from the request's facts, the bandit update from what each exposure recorded (its "live").

Or on a named intent: `intent:planning-a-trip` puts a visitor in segment "yes" when their score on it
(field "pi" of the unit hash, personalization/intent_fields.py) is at least INTENT_SOURCE_THRESHOLD,
"no" below it, "" when not scored; the exposure records it as its segment.
"""

import re

_BEHAVIOR_KEY = re.compile(r"^b(\d+)\.\d+$")
SEGS_PREFIX = "segs:"
LIVE_PREFIX = "live:"
INTENT_PREFIX = "intent:"
# One cut for every intent: the default threshold of an intent (segments/intents.py DEFAULT_THRESHOLD; a test
# holds them equal, personalization may not import segments).
INTENT_SOURCE_THRESHOLD = 0.35

# A live segment source → the request fact it reads (experiences/conditions.py facts_of); the
# exposure's "live" record keeps it under the source's own name (facts_record).
LIVE_SOURCES = {"stage": "stage", "visitor": "visitor", "first_touch": "first_touch_class"}


def run_prefix(run_id: int) -> str:
    """What every segment key of a clustering run starts with: "b12."."""
    return f"b{run_id}."


def behavior_key(run_id: int, index: int) -> str:
    """The key of a clustering run's index-th segment: "b12.3"."""
    return f"{run_prefix(run_id)}{index}"


def run_of_key(key: str) -> int | None:
    """The clustering run a segment key belongs to ("b12.3" → 12), or None for a rule or lookalike key."""
    match = _BEHAVIOR_KEY.match(key)
    return int(match.group(1)) if match else None


def run_source(run_id: int) -> str:
    """A per-segment bandit's segment source naming a clustering run: "run:12"."""
    return f"run:{run_id}"


def source_run(segment_attribute: str) -> int | None:
    """The clustering run a per-segment bandit learns on ("run:12" → 12), or None for an attribute."""
    if segment_attribute.startswith("run:") and segment_attribute[4:].isdigit():
        return int(segment_attribute[4:])
    return None


def segment_field(segment_attribute: str) -> str:
    """What the engine keys segments on: "run:12" becomes "segs:b12.", the prefix its segment keys
    share in the unit hash's "segs"; an attribute name stays as it is."""
    run_id = source_run(segment_attribute)
    return f"{SEGS_PREFIX}{run_prefix(run_id)}" if run_id is not None else segment_attribute


def source_live(segment_attribute: str) -> str | None:
    """The live field a per-segment bandit learns on ("live:stage" → "stage"), or None when the
    source is not live. An unknown field ("live:cart") is returned as is: saving refuses it."""
    return segment_attribute[len(LIVE_PREFIX) :] if segment_attribute.startswith(LIVE_PREFIX) else None


def source_intent(segment_attribute: str) -> str | None:
    """The intent a per-segment bandit learns on ("intent:planning-a-trip" → "planning-a-trip"), or None."""
    return segment_attribute[len(INTENT_PREFIX) :] if segment_attribute.startswith(INTENT_PREFIX) else None
