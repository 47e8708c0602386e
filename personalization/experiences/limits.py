"""What an experience may hold so that decide can always serve it. Pure Python: no Django, no I/O.

Every JSON in an experience goes through the same check as events (`event_schema.json_limits_check`:
storable characters, finite 64-bit numbers, depth, size), with limits chosen for what it is:

- PAYLOAD_MAX_DEPTH = 32. A payload is content for one place on a page (a headline, an image, a
  list of products and their fields): real ones nest 3 to 6 deep. 32 leaves room for any of them and
  stays far below orjson's limit of 254 levels, which the snapshot reaches 4 levels further in
  (snapshot → experiences → key → payloads → variant), and below Python's recursion limit in the
  detail page's pretty printing.
- PAYLOAD_MAX_CHARS = 64K per variant. Decide puts the payload in every answer, so a site waits for
  it on every page view; larger content (HTML, images) belongs behind a URL in the payload.
- EXPERIENCE_MAX_CHARS = 1M for one compiled experience (its payloads, targeting and weights): every
  decide process holds the whole snapshot in memory and reloads it on every change, and one Redis
  value of a few MB is read in a millisecond or two. Fifteen variants at the payload maximum fit.
- Targeting: the event limits (depth 8) and 16K characters; it is read on every decide.

`snapshot_entry_check` applies the same rules to an experience as compiled for decide, whatever is
in the database (rows written before these checks existed, or by hand), so one bad experience is
left out of the snapshot instead of stopping the project's publish.
"""

import math

from personalization.ingest.schema import MAX_DEPTH, FieldError, json_limits_check, text_check

PAYLOAD_MAX_DEPTH = 32
PAYLOAD_MAX_CHARS = 64 * 1024
EXPERIENCE_MAX_CHARS = 1024 * 1024
TARGETING_MAX_CHARS = 16 * 1024
_OPS = ("in", "not_in", "exists")
_TARGETING_HINT = 'use {"attributes": [{"attribute": "country", "op": "in", "values": ["DE"]}], "segments": [...]}'


def payload_check(payload: object, name: str) -> int:
    """A variant payload decide can serve, or FieldError naming `name` (e.g. "variants[1].payload").
    Returns its size in characters of compact JSON."""
    return json_limits_check(payload, name, max_depth=PAYLOAD_MAX_DEPTH, max_chars=PAYLOAD_MAX_CHARS)


def targeting_check(targeting: object, name: str = "targeting") -> None:
    """Targeting the engine can evaluate: {"attributes": [{"attribute", "op", "values"}], "segments": [keys]}."""
    if not isinstance(targeting, dict) or set(targeting) - {"attributes", "segments"}:
        raise FieldError(name, _TARGETING_HINT)
    json_limits_check(targeting, name, max_depth=MAX_DEPTH, max_chars=TARGETING_MAX_CHARS)
    segments = targeting.get("segments", [])
    if not isinstance(segments, list) or not all(isinstance(key, str) and key for key in segments):
        raise FieldError(f"{name}.segments", 'give a list of segment keys, e.g. ["b12.3", "repeat-buyers"]')
    conditions = targeting.get("attributes", [])
    if not isinstance(conditions, list):
        raise FieldError(f"{name}.attributes", _TARGETING_HINT)
    for i, condition in enumerate(conditions):
        at = f"{name}.attributes[{i}]"
        if not isinstance(condition, dict) or not isinstance(condition.get("attribute"), str):
            raise FieldError(at, 'each condition needs "attribute" (a name), "op" and "values"')
        if condition.get("op", "in") not in _OPS:
            raise FieldError(f"{at}.op", "use in, not_in or exists")
        values = condition.get("values", [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise FieldError(f"{at}.values", 'give a list of texts, e.g. ["DE", "AT"]')


def snapshot_entry_check(entry: dict) -> None:
    """An experience as compiled for decide (see personalization.decide.engine) that the engine can serve and
    orjson can write, or FieldError naming what to fix, in the words of the experience form."""
    order = entry["order"]
    for i, key in enumerate(order):
        text_check(key, f"variants[{i}].key")
        payload_check(entry["payloads"].get(key), f"variants[{i}].payload")
    if len(set(order)) != len(order) or set(entry["payloads"]) != set(order):
        raise FieldError("variants.key", "every variant needs a unique key")
    if entry["control"] not in order:
        raise FieldError("variants.is_control", "mark exactly one variant as the control (the default)")
    fixed = entry["fixed"]
    if len(fixed) != len(order) or not all(math.isfinite(w) and w >= 0 for w in fixed) or sum(fixed) <= 0:
        raise FieldError("variants.weight", "weights must be non-negative numbers, not all zero")
    for segment, weights in entry["weights"].items():
        if len(weights) != len(order) or not all(math.isfinite(w) and w >= 0 for w in weights):
            raise FieldError(
                "bandit weights",
                f"the stored weights of segment “{segment}” are unusable; the next bandit update replaces them",
            )
    targeting_check(entry["targeting"])
    json_limits_check(entry, "experience", max_depth=PAYLOAD_MAX_DEPTH + 2, max_chars=EXPERIENCE_MAX_CHARS)
