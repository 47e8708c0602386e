"""The journey stage of a session, from its live state, and the reason in words. Pure Python.

The definition is data a marketer reads on the page and changes per project: rules tried in order,
the first that holds names the stage. A rule holds when ALL its `all` thresholds are reached and (if
it has any) at least one of its `any` thresholds. A project stores only the thresholds it changes
(`journey_definition(overrides)`); the rule order and the measures are fixed, so a stored definition
can never stop matching: the last stage, exploring, has no thresholds.

Measures (of the session; `SessionView` is the state as of now):
    purchases, cart_adds, checkout_views, session_ended (1 once idle past the boundary),
    items_in_one_category (item views in the most viewed category), items_viewed (distinct),
    search_refinements, long_dwell_views, page_views, minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# The type only: live_session talks to Redis and reads the unit TTL from decide/units.py (Django);
# this module stays pure.
if TYPE_CHECKING:
    from personalization.people.live_session import SessionView

STAGES = ("bought", "abandoned", "deciding", "comparing", "exploring")

MEASURES = {
    "purchases": "purchases",
    "cart_adds": "cart adds",
    "checkout_views": "cart or checkout page views",
    "session_ended": "session ended (1 = yes)",
    "items_in_one_category": "items viewed in one category",
    "items_viewed": "distinct items viewed",
    "search_refinements": "searches refined",
    "long_dwell_views": "pages read for 30 s or more",
    "page_views": "page views",
    "minutes": "minutes in the session",
}

DEFAULT_DEFINITION: tuple[dict, ...] = (
    {"stage": "bought", "all": {"purchases": 1}, "any": {}},
    {"stage": "abandoned", "all": {"cart_adds": 1, "session_ended": 1}, "any": {}},
    {"stage": "deciding", "all": {}, "any": {"cart_adds": 1, "checkout_views": 1}},
    {
        "stage": "comparing",
        "all": {},
        "any": {"items_in_one_category": 3, "search_refinements": 2, "long_dwell_views": 2, "items_viewed": 5},
    },
    {"stage": "exploring", "all": {}, "any": {}},
)

MAX_THRESHOLD = 10_000


class JourneyDefinitionError(ValueError):
    """A threshold a project tried to set is unusable; `field` names it as the form does."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def journey_definition(overrides: dict | None = None) -> tuple[dict, ...]:
    """The default definition with a project's thresholds in place: {stage: {measure: threshold}}.

    Only measures a stage already uses can be changed (the shape of each rule is the product's, the
    numbers are the marketer's). Raises JourneyDefinitionError naming `stage.measure` and the fix.
    """
    if not overrides:
        return DEFAULT_DEFINITION
    if not isinstance(overrides, dict):
        raise JourneyDefinitionError("journey", "must be an object of stage → {measure: threshold}")
    rules = {rule["stage"]: rule for rule in DEFAULT_DEFINITION}
    changed = {stage: {"all": dict(r["all"]), "any": dict(r["any"])} for stage, r in rules.items()}
    for stage, thresholds in overrides.items():
        if stage not in rules:
            raise JourneyDefinitionError(f"journey.{stage}", f"is not a stage; use one of {', '.join(STAGES)}")
        if not isinstance(thresholds, dict):
            raise JourneyDefinitionError(f"journey.{stage}", "must be an object of measure → threshold")
        for measure, value in thresholds.items():
            name = f"journey.{stage}.{measure}"
            part = next((p for p in ("all", "any") if measure in rules[stage][p]), None)
            if part is None:
                used = [*rules[stage]["all"], *rules[stage]["any"]]
                hint = f"use one of {', '.join(used)}" if used else "this stage has no thresholds (it is the rest)"
                raise JourneyDefinitionError(name, f"is not a measure of {stage}; {hint}")
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THRESHOLD:
                raise JourneyDefinitionError(name, f"must be a whole number from 1 to {MAX_THRESHOLD}")
            if measure == "session_ended" and value != 1:
                raise JourneyDefinitionError(name, "must be 1 (the session has ended)")
            changed[stage][part][measure] = value
    return tuple({"stage": r["stage"], **changed[r["stage"]]} for r in DEFAULT_DEFINITION)


def _top_category(view: SessionView) -> tuple[str, int]:
    if not view.category_item_views:
        return "", 0
    name = max(view.category_item_views, key=view.category_item_views.__getitem__)
    return name, view.category_item_views[name]


def measures_of(view: SessionView) -> dict[str, float]:
    """Every measure of the session, as the rules read them."""
    return {
        "purchases": view.purchases,
        "cart_adds": view.cart_adds,
        "checkout_views": view.checkout_views,
        "session_ended": int(view.ended),
        "items_in_one_category": _top_category(view)[1],
        "items_viewed": view.items_viewed,
        "search_refinements": view.search_refinements,
        "long_dwell_views": view.long_dwell_views,
        "page_views": view.page_views,
        "minutes": view.minutes,
    }


@dataclass(frozen=True, slots=True)
class Stage:
    stage: str
    reason: str


def _holds(rule: dict, measures: dict) -> bool:
    if any(measures[m] < t for m, t in rule["all"].items()):
        return False
    return not rule["any"] or any(measures[m] >= t for m, t in rule["any"].items())


def stage_of(view: SessionView, definition: tuple[dict, ...] = DEFAULT_DEFINITION) -> Stage:
    """The stage of the visitor's (last) session and why. A visitor with no state is exploring."""
    stage = stage_name(view, definition)
    return Stage(stage, _reason(stage, view))


def stage_name(view: SessionView, definition: tuple[dict, ...] = DEFAULT_DEFINITION) -> str:
    """The stage alone: what decide reads on every request with conditions, where the reason's
    sentence would be built and thrown away."""
    measures = measures_of(view)
    for rule in definition:
        if _holds(rule, measures):
            return rule["stage"]
    return "exploring"  # unreachable with a definition from journey_definition


def _plural(n: float, one: str, many: str | None = None) -> str:
    n = int(n)
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _minutes(view: SessionView) -> str:
    return _plural(max(1, round(view.minutes)), "minute")


def _category_words(name: str) -> str:
    return name.replace("-", " ").replace("_", " ")


def _reason(stage: str, view: SessionView) -> str:
    """One sentence a marketer reads beside the stage: the facts that put the session there."""
    parts = []
    category, in_category = _top_category(view)
    if stage == "bought":
        parts.append(f"bought after {_plural(view.items_viewed, 'item')} viewed in {_minutes(view)}")
    elif stage == "abandoned":
        parts.append(f"{_plural(view.cart_adds, 'cart add')}, no purchase, session ended")
        if view.cart_open:
            parts.append(f"last cart add {_plural(round(view.minutes_since_cart_add or 0), 'minute')} ago")
    elif stage == "deciding":
        if view.cart_adds:
            parts.append(f"{_plural(view.cart_adds, 'item')} added to the cart")
        if view.checkout_views:
            parts.append(f"{_plural(view.checkout_views, 'checkout view')}")
    elif stage == "comparing":
        if in_category >= 2:
            parts.append(f"{in_category} {_category_words(category)} viewed in {_minutes(view)}")
        elif view.items_viewed:
            parts.append(f"{_plural(view.items_viewed, 'item')} viewed in {_minutes(view)}")
        if view.long_dwell_views:
            parts.append(f"{_plural(view.long_dwell_views, 'long read')}")
    else:
        parts.append(f"{_plural(view.page_views, 'page')} viewed in {_minutes(view)}")
        if view.category_views:
            parts.append(f"across {_plural(len(view.category_views), 'category', 'categories')}")
    if view.search_refinements and stage in ("comparing", "deciding", "exploring"):
        parts.append(f"{_plural(view.search_refinements, 'search', 'searches')} refined")
    return ", ".join(parts)


def _threshold_words(measure: str, threshold: int) -> str:
    return "the session has ended" if measure == "session_ended" else f"{MEASURES[measure]} ≥ {threshold}"


def definition_sentences(definition: tuple[dict, ...] = DEFAULT_DEFINITION) -> list[str]:
    """The definition as the page shows it, one sentence per stage, in the order they are tried."""
    lines = []
    for index, rule in enumerate(definition):
        lead = "A session is" if index == 0 else "Otherwise"
        clauses = [_threshold_words(m, t) for m, t in rule["all"].items()]
        anys = [_threshold_words(m, t) for m, t in rule["any"].items()]
        if anys:
            clauses.append(anys[0] if len(anys) == 1 else "any of: " + ", ".join(anys))
        when = " when " + " and ".join(clauses) if clauses else " (every other session)"
        lines.append(f"{lead} {rule['stage']}{when}.")
    return lines
