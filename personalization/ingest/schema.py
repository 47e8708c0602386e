"""Validation and normalisation of incoming event batches. Pure Python: no Django, no I/O.

A batch is `{"events": [...]}` with at most MAX_BATCH events. Envelope problems reject the whole
batch; problems in one event reject only that event, reported with its index, field and fix.
Fields Kairos does not use are dropped and reported as warnings (index, field, why), never silently.
"""

import math
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

MAX_BATCH = 1000
MAX_PROPERTIES_CHARS = 8000  # as compact JSON text
MAX_DEPTH = 8  # objects and lists inside properties, attributes or a decide context
MAX_KEY_CHARS = 128
NOISE_CLICK_WINDOW_MS = 500
MAX_FUTURE = timedelta(minutes=10)
MAX_PAST = timedelta(days=30)

STANDARD_TYPES = {"page_view", "click", "search", "scroll", "add_to_cart", "purchase", "exposure", "identify"}
EVENT_FIELDS = {"event_id", "type", "user_id", "anonymous_id", "session_id", "timestamp", "value", "properties"}
# What an exposure sent from outside may say; its goal, window and expected split come from the
# experience registered in Kairos, so one report never mixes windows.
EXPOSURE_PROPERTIES = {"experience", "variant", "holdout", "segment"}
_ID_RE = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,128}$")
_EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_CUSTOM_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# type -> (property that must be present, expected python type(s), hint)
_REQUIRED_PROPERTIES: dict[str, list[tuple[str, tuple[type, ...], str]]] = {
    "page_view": [("url", (str,), 'the page URL, e.g. "/products/trail-shoe"')],
    "click": [("target", (str,), "what was clicked, e.g. a CSS selector or element id")],
    "search": [("query", (str,), "the search text")],
    "scroll": [("depth", (int, float), "scroll depth in percent, 0 to 100")],
    "add_to_cart": [("item", (str,), "the item id")],
    "exposure": [("experience", (str,), "the experience key")],
}


class BatchError(ValueError):
    """The envelope itself is unusable; nothing in it is accepted."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass
class BatchResult:
    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    dropped_noise: int = 0
    duplicates: int = 0
    warnings: list[dict] = field(default_factory=list)
    # The accepted events' times in epoch seconds, in their order: the live update reads these
    # rather than parse every "ts" again in the request.
    seconds: list[int] = field(default_factory=list)


class FieldError(ValueError):
    """One field of one event (or of a decide request) is unusable."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        self.message = message


# What PostgreSQL text and jsonb cannot hold (NUL) and what is not valid UTF-8 (a lone surrogate).
_SURROGATE = re.compile("[\ud800-\udfff]")
_STORE_HINT = "contains a character that cannot be stored (NUL U+0000 or a lone surrogate); remove it"


def text_check(value: str, name: str) -> None:
    """A string PostgreSQL text/jsonb and UTF-8 JSON can store, or FieldError naming the field."""
    # `in` and isascii() are C loops: the common ASCII string costs well under a microsecond.
    if "\x00" in value or (not value.isascii() and _SURROGATE.search(value)):
        raise FieldError(name, _STORE_HINT)


def json_check(value: object, name: str, depth: int = 0, *, max_depth: int = MAX_DEPTH) -> None:
    """Every key and string inside a JSON value is storable, every number fits JSON and orjson (finite,
    integers in 64 bits), and it nests at most `max_depth` deep.

    Walks at most max_depth levels, so a body nested a thousand deep costs no more than one nested
    max_depth + 1 deep (and never reaches a recursion limit in orjson, which stops at 254, or repr)."""
    if isinstance(value, str):
        text_check(value, name)
    elif isinstance(value, dict):
        if depth >= max_depth:
            raise FieldError(name, f"is nested too deep; keep objects and lists at most {max_depth} levels deep")
        for key, item in value.items():
            if not isinstance(key, str):
                raise FieldError(name, "has a key that is not a string; JSON object keys are strings")
            if len(key) > MAX_KEY_CHARS:
                raise FieldError(f"{name}.{key[:20]}…", f"key is longer than {MAX_KEY_CHARS} characters; shorten it")
            text_check(key, f"{name} (a key)")
            json_check(item, f"{name}.{key}", depth + 1, max_depth=max_depth)
    elif isinstance(value, list):
        if depth >= max_depth:
            raise FieldError(name, f"is nested too deep; keep objects and lists at most {max_depth} levels deep")
        for index, item in enumerate(value):
            json_check(item, f"{name}[{index}]", depth + 1, max_depth=max_depth)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError(name, "is not a finite number (JSON has no NaN or Infinity); use a number or null")
    elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        # Python's json reads any integer; orjson (the snapshot, the stream) writes only 64-bit ones.
        raise FieldError(name, "is a number too large to store; send it as a string")


def json_limits_check(value: object, name: str, *, max_depth: int, max_chars: int) -> int:
    """json_check, then the size as compact JSON text at most `max_chars` characters (counted in
    characters, not bytes, so a limit means the same in every language). Returns that size.

    The one check every JSON a person or program enters goes through: event properties, decide
    contexts, variant payloads, targeting, privacy identifiers. Depth is checked first, so the
    serialisation that measures the size can never reach orjson's recursion limit."""
    json_check(value, name, max_depth=max_depth)
    size = len(orjson.dumps(value).decode())
    if size > max_chars:
        raise FieldError(
            name,
            f"is {size:,} characters as JSON; keep it under {max_chars:,}"
            " (put large content such as images or HTML behind a URL and send the URL)",
        )
    return size


def _parse_ts(raw: object, now: datetime, max_past: timedelta | None) -> datetime:
    if raw is None:
        return now
    if isinstance(raw, bool):
        raise FieldError("timestamp", "must be an ISO 8601 string or epoch milliseconds")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise FieldError("timestamp", "must be a finite number of epoch milliseconds")
        # Compared as numbers first: 1e20 or -1e15 ms is no datetime at all.
        now_ms = now.timestamp() * 1000
        if raw > now_ms + MAX_FUTURE.total_seconds() * 1000:
            raise FieldError("timestamp", "is in the future; check the client clock (epoch milliseconds, not µs)")
        try:
            ts = datetime.fromtimestamp(raw / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise FieldError("timestamp", "is out of range; use epoch milliseconds of a real date") from None
    elif isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise FieldError("timestamp", "is not ISO 8601; use e.g. 2026-11-25T13:31:40Z") from None
        if ts.tzinfo is None:
            raise FieldError("timestamp", "has no time zone; add Z or +00:00")
    else:
        raise FieldError("timestamp", "must be an ISO 8601 string or epoch milliseconds")
    try:
        future = ts > now + MAX_FUTURE
        past = max_past is not None and ts < now - max_past
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise FieldError("timestamp", "is out of range; use a real date, e.g. 2026-11-25T13:31:40Z") from None
    if future:
        raise FieldError("timestamp", "is in the future; check the client clock")
    if past:
        raise FieldError(
            "timestamp",
            f"is more than {max_past.days} days old; import history with a secret key"
            " (POST /api/v1/events/import or manage.py events_import)",
        )
    return ts


def _check_id(raw: object, name: str) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not _ID_RE.fullmatch(raw):
        raise FieldError(name, "must be a string of 1–128 letters, digits or _.:@+-")
    return raw


def _ignored(raw: dict, etype: str, properties: dict) -> list[tuple[str, str]]:
    """(field, why) of what this event carries that Kairos does not use."""
    ignored = [(name, "is not an event field; it was ignored") for name in raw if name not in EVENT_FIELDS]
    if etype == "exposure":
        ignored += [
            (
                f"properties.{name}",
                "was ignored: an exposure says only experience, variant (or holdout) and segment;"
                " the goal, window and split come from the registered experience",
            )
            for name in properties
            if name not in EXPOSURE_PROPERTIES
        ]
    elif "attributes" in properties and etype != "identify":
        ignored.append(("properties.attributes", "was ignored: set profile attributes with an identify event"))
    return sorted(ignored)


def _normalise(raw: object, now: datetime, max_past: timedelta | None) -> tuple[dict, datetime]:
    if not isinstance(raw, dict):
        raise FieldError("event", "must be a JSON object")
    event_id = raw.get("event_id")
    if not isinstance(event_id, str) or not _EVENT_ID_RE.fullmatch(event_id):
        raise FieldError("event_id", "is required: a unique string of 1–64 letters, digits or _.:- per event")
    etype = raw.get("type")
    if not isinstance(etype, str) or not (etype in STANDARD_TYPES or _CUSTOM_TYPE_RE.fullmatch(etype)):
        raise FieldError("type", 'is required: a standard type or a custom snake_case name, e.g. "signup"')
    user_id = _check_id(raw.get("user_id"), "user_id")
    anonymous_id = _check_id(raw.get("anonymous_id"), "anonymous_id")
    if user_id is None and anonymous_id is None:
        raise FieldError("user_id", "is missing: give user_id or anonymous_id (or both)")
    if etype == "identify" and user_id is None:
        raise FieldError("user_id", "identify needs the user_id (and the anonymous_id, to join the visitor's history)")
    session_id = raw.get("session_id") or ""
    if not isinstance(session_id, str) or len(session_id) > 64:
        raise FieldError("session_id", "must be a string of at most 64 characters")
    text_check(session_id, "session_id")
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise FieldError("properties", "must be a JSON object")
    json_limits_check(properties, "properties", max_depth=MAX_DEPTH, max_chars=MAX_PROPERTIES_CHARS)
    for name, types, hint in _REQUIRED_PROPERTIES.get(etype, []):
        value = properties.get(name)
        if not isinstance(value, types) or isinstance(value, bool) or value == "":
            raise FieldError(f"properties.{name}", f"is required for {etype}: {hint}")
    if etype == "scroll" and not 0 <= properties["depth"] <= 100:
        raise FieldError("properties.depth", "must be between 0 and 100 (percent)")
    if etype == "exposure" and not (isinstance(properties.get("variant"), str) or properties.get("holdout") is True):
        raise FieldError("properties.variant", 'is required for exposure: the variant key, or "holdout": true')
    if etype == "exposure" and not isinstance(properties.get("segment", ""), str):
        raise FieldError("properties.segment", 'must be a string, e.g. "mobile"')
    if etype == "identify" and not isinstance(properties.get("attributes", {}), dict):
        raise FieldError("properties.attributes", 'must be a JSON object, e.g. {"plan": "gold"}')
    value = raw.get("value")
    if etype == "purchase" and value is None:
        raise FieldError("value", "is required for purchase: the order value, e.g. 59.90")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise FieldError("value", "must be a number, e.g. 59.90")
        if value < 0 or value >= 1e12:
            raise FieldError("value", "must be between 0 and 999,999,999,999")
    ts = _parse_ts(raw.get("timestamp"), now, max_past)
    ignored = _ignored(raw, etype, properties)
    if etype == "exposure":
        properties = {k: v for k, v in properties.items() if k in EXPOSURE_PROPERTIES}
    elif etype != "identify":
        properties = {k: v for k, v in properties.items() if k != "attributes"}
    event = {
        "event_id": event_id,
        "type": etype,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "ts": ts.isoformat(),
        "session_id": session_id,
        "value": value,
        "properties": properties,
        "ignored": ignored,
    }
    return event, ts


def _check_registered(properties: dict, experiences: Mapping[str, Container[str]]) -> None:
    key, variant = properties["experience"], properties.get("variant")
    if key not in experiences:
        raise FieldError(
            "properties.experience",
            f'"{key[:64]}" is not an experience of this project; register it first (with its variants, control,'
            ' split, goal and window): Experiences → New experience → "Assigned outside Kairos", or'
            ' POST /api/v1/experiences/ with "external": true',
        )
    if properties.get("holdout") is not True and variant not in experiences[key]:
        known = ", ".join(sorted(experiences[key])[:20])
        raise FieldError("properties.variant", f'"{str(variant)[:64]}" is not a variant of {key}; use one of: {known}')


def batch_validate(
    payload: object,
    *,
    now: datetime | None = None,
    max_past: timedelta | None = MAX_PAST,
    experiences: Mapping[str, Container[str]] | None = None,
) -> BatchResult:
    """Validate a decoded batch. Raises BatchError for an unusable envelope.

    `max_past`: the oldest timestamp taken (None: any age, for history imports with a secret key).
    `experiences`: the project's registered experience keys → their variant keys; an exposure of
    any other experience or variant is refused (None: not checked).
    """
    now = now or datetime.now(UTC)
    if not isinstance(payload, dict):
        raise BatchError("body", 'must be a JSON object like {"events": [...]}')
    events = payload.get("events")
    if not isinstance(events, list):
        raise BatchError("events", "is required: a list of event objects")
    if not events:
        raise BatchError("events", "is empty; send at least one event")
    if len(events) > MAX_BATCH:
        raise BatchError("events", f"has {len(events)} events; send at most {MAX_BATCH} per request")

    result = BatchResult()
    seen_ids: set[str] = set()
    last_click: dict[tuple, datetime] = {}
    for index, raw in enumerate(events):
        try:
            event, ts = _normalise(raw, now, max_past)
            if event["type"] == "exposure" and experiences is not None:
                _check_registered(event["properties"], experiences)
        except FieldError as invalid:
            result.rejected.append({"index": index, "field": invalid.field, "message": invalid.message})
            continue
        for name, why in event.pop("ignored"):
            result.warnings.append({"index": index, "field": name, "message": why})
        if event["event_id"] in seen_ids:
            result.duplicates += 1
            continue
        seen_ids.add(event["event_id"])
        if event["type"] == "click":
            key = (event["user_id"] or event["anonymous_id"], event["properties"]["target"])
            previous = last_click.get(key)
            last_click[key] = ts
            if previous is not None and abs((ts - previous).total_seconds()) * 1000 < NOISE_CLICK_WINDOW_MS:
                result.dropped_noise += 1
                continue
        result.accepted.append(event)
        result.seconds.append(int(ts.timestamp()))
    return result
