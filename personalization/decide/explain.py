"""Decide's `explain: true`: a short reason for a personalized variant ("because you viewed
trail-shoes"), for a site that wants to say why. Pure Python: no Django, no I/O.

Made only from what decide already holds for the request, so asking costs no Redis command and no
SQL: the experience's compiled targeting that matched, the facts its conditions read (the live
state, context and scores of the unit hash read in the one round trip), the text that drove each
intent score (kept in the intent field, personalization/intent_fields.py) and, for a segment in the
targeting, the behavior that sets that segment apart (compiled into the snapshot by the segments app:
a trait of the segment, not a count of the person's events, so it says "people who …").

Only targeted experiences get a reason: a variant drawn for everyone has none to give (None). Facts
are listed as they made the condition true; a "not" part is a reason only by absence and is left out.
"""

from collections.abc import Callable

from personalization.experiences.conditions import condition_function
from personalization.intent_fields import INTENT_FACT, UNIT_INTENTS_FIELD, intents_why

PERSONALIZED = frozenset({"fixed_split", "bandit", "segment_bandit", "sticky"})
MAX_PARTS = 2
MAX_CHARS = 160

_SESSION_WORDS = {
    "session.page_views": "you viewed {v} pages this visit",
    "session.items_viewed": "you viewed {v} items this visit",
    "session.searches": "you searched this visit",
    "session.search_refinements": "you refined your search",
    "session.cart_adds": "you added to your cart",
    "session.checkout_views": "you looked at checkout",
    "session.purchases": "you bought this visit",
    "sessions_30d": "you visited {v} times this month",
    "days_since_last_session": "you were away {v} days",
    "minutes_since_cart_add": "you left something in your cart",
    "tenure_days": "you have been with us {v} days",
    "likely_to_buy": "you seem ready to buy",
    "likely_to_buy.top_percent": "you seem ready to buy",
    "expected_revenue": "you are a valued customer",
    "expected_revenue.top_percent": "you are a valued customer",
    "lapse_risk": "we would like to see you again",
    "lapse_risk.top_percent": "we would like to see you again",
}
_KEYED_WORDS = {
    "session.category_views": "you viewed {k}",
    "session.category_item_views": "you viewed {k} items",
    "session.events": "of your {k} this visit",
}
_VALUE_WORDS = {
    "stage": "you are {v}",
    "visitor": {"returning": "you came back", "new": "this is your first visit"},
    "device": "you are on {v}",
    "referrer": "you came from {v}",
    "first_touch": "you first came from {v}",
    "session.channel": "you came from {v}",
    "cart_item": "you left {v} in your cart",
    "weekday": "it is {v}",
    "local_hour": "of the time of day",
}


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.0f}"


def _atom_words(atom: list, facts: dict, why_intents: dict[str, str]) -> str | None:
    name, key = atom[1], atom[2]
    if name == INTENT_FACT:
        text = why_intents.get(key)
        return f"you looked for “{text}”" if text else f"you seem interested in {key.replace('-', ' ')}"
    if key:
        template = _KEYED_WORDS.get(name)
        return template.format(k=key.replace("-", " ") if name != "session.events" else key) if template else None
    value = facts.get(name)
    if name in _VALUE_WORDS:
        words = _VALUE_WORDS[name]
        if isinstance(words, dict):
            return words.get(str(value))
        return words.format(v=value)
    template = _SESSION_WORDS.get(name)
    if template is None or value is None:
        return None
    return template.format(v=_number(value))


def _true_atoms(compiled: list, facts: dict) -> list[list]:
    """The comparisons that made `compiled` true (it is true on these facts): all of an "and", the first
    true branch of an "or", none under a "not"."""
    head = compiled[0]
    if head == "and":
        return [a for part in compiled[1:] for a in _true_atoms(part, facts)]
    if head == "or":
        for part in compiled[1:]:
            if condition_function(part)(facts):
                return _true_atoms(part, facts)
        return []
    if head == "not":
        return []
    return [compiled]


def _join(parts: list[str]) -> str | None:
    unique = list(dict.fromkeys(p for p in parts if p))[:MAX_PARTS]
    if not unique:
        return None
    text = "because " + " and ".join(unique)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1].rstrip() + "…"


def assignment_explanation(exp: dict, answer: dict, user: dict, live: Callable[[], dict]) -> str | None:
    """The reason for one assignment (`answer`, as the engine gave it) of experience `exp` (as in the
    snapshot), or None when it is not a personalized variant or nothing targeted it."""
    if answer.get("reason") not in PERSONALIZED:
        return None
    parts: list[str] = []
    targeting = exp.get("targeting") or {}
    wanted = targeting.get("segments")
    if wanted:
        mine = set((user.get("segs") or "").split())
        traits = exp.get("why_segments") or {}
        for key in wanted:
            if key in mine and traits.get(key):
                parts.append(f"you browse like people who {traits[key]}")
                break
    for condition in targeting.get("attributes", ()):
        if condition.get("op", "in") == "in":
            parts.append(f"your {condition['attribute']} is {', '.join(map(str, condition.get('values', [])))}")
    compiled = exp.get("conditions")
    if compiled:
        facts = live()
        why_intents = intents_why(user.get(UNIT_INTENTS_FIELD))
        parts += [w for atom in _true_atoms(compiled, facts) if (w := _atom_words(atom, facts, why_intents))]
    return _join(parts)
