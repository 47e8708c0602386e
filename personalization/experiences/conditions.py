"""Targeting conditions in plain text that read as sentences. Pure Python: no Django, no I/O.

    session.cart_adds >= 1 and session.purchases = 0
    minutes_since_cart_add <= 30
    stage in comparing, deciding
    session.category_views[trail-shoes] >= 2
    local_hour between 18 and 23
    days_since_last_session >= 7 or (device = tablet and not referrer = paid)
    intent planning-a-trip >= 0.35

`condition_parse(text)` validates when the experience is saved (ConditionError says where and how
to fix it) and returns the compiled form the snapshot carries: nested JSON lists,
    ["or", c, ...]  ["and", c, ...]  ["not", c]
    ["cmp", field, key, op, value]  ["in", field, key, [values], negated]  ["between", field, key, lo, hi]
(`key` is the bracketed name, "" for a plain field). `condition_function(compiled)` turns it, once
per snapshot, into a function of the facts; `facts_of` builds the facts of one decide request.

A fact that is unknown (no previous session, no open cart) makes its comparison false, `!=`
included: targeting "days_since_last_session >= 7" never picks a first-time visitor.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from personalization.decide.context import DEVICES, REFERRERS, WEEKDAYS
from personalization.intent_fields import INTENT_FACT, INTENT_KEY
from personalization.people.journey import STAGES
from personalization.score_fields import PROBABILITIES, SCORES, TOP_SUFFIX, top_fact

# The type only: live_session talks to Redis and reads the unit TTL from decide/units.py (Django);
# this module stays pure.
if TYPE_CHECKING:
    from personalization.people.live_session import SessionView

MAX_CHARS = 500
MAX_DEPTH = 6  # parentheses and "not" inside one another
MAX_COMPARISONS = 20
MAX_VALUES = 20  # after "in"
MAX_NUMBER = 1e9
MAX_KEY_CHARS = 64

NUMBER, TEXT, ENUM = "number", "text", "enum"

# field -> (kind, allowed values for an enum, what it means: shown on the page and in errors)
FIELDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "session.events": (NUMBER, (), "events in this session"),
    "session.page_views": (NUMBER, (), "page views in this session"),
    "session.items_viewed": (NUMBER, (), "distinct items viewed in this session"),
    "session.searches": (NUMBER, (), "searches in this session"),
    "session.search_refinements": (NUMBER, (), "searches refined in this session"),
    "session.cart_adds": (NUMBER, (), "cart adds in this session"),
    "session.cart_removes": (NUMBER, (), "cart removals in this session"),
    "session.purchases": (NUMBER, (), "purchases in this session"),
    "session.checkout_views": (NUMBER, (), "cart or checkout page views in this session"),
    "session.minutes": (NUMBER, (), "minutes since this session started"),
    "session.channel": (TEXT, (), "where this session came from (utm_source or referrer host)"),
    "sessions_30d": (NUMBER, (), "sessions in the last 30 days"),
    "days_since_last_session": (NUMBER, (), "days since the previous session"),
    "minutes_since_cart_add": (NUMBER, (), "minutes since a cart add not followed by a purchase"),
    "cart_item": (TEXT, (), "the item of that cart add"),
    "tenure_days": (NUMBER, (), "days since first seen"),
    "first_touch": (TEXT, (), "the first visit's utm_source or referrer host"),
    "local_hour": (NUMBER, (), "hour of day in the project's time zone, 0 to 23"),
    "weekday": (ENUM, WEEKDAYS, "day of week in the project's time zone"),
    "device": (ENUM, DEVICES, "device class"),
    "referrer": (ENUM, REFERRERS, "where this visit came from"),
    "visitor": (ENUM, ("new", "returning"), "new or returning visitor"),
    "stage": (ENUM, STAGES, "journey stage of the session"),
    # Predictive scores (segments' Scores page), written to the unit hash at each retrain; unknown
    # (so every comparison false) for someone not scored yet. "likely_to_buy top 10%" reads as
    # "likely_to_buy.top_percent <= 10".
    **{name: (NUMBER, (), meaning) for name, meaning in SCORES.items()},
    **{
        top_fact(name): (NUMBER, (), f"place among everyone scored by {name}, in percent from the top (1 = top 1 %)")
        for name in SCORES
    },
}
# Fields read with a name in brackets: session.category_views[trail-shoes]
KEYED_FIELDS: dict[str, str] = {
    "session.category_views": "views of pages of this category in this session",
    "session.category_item_views": "item views of this category in this session",
    "session.events": "events of this type in this session",
}

_ALLOWED = re.compile(r"""[A-Za-z0-9 _.\-:,()\[\]=<>!"'%]*""")
_TOKEN = re.compile(
    r"""\s*(?:(?P<num>-?\d+(?:\.\d+)?)(?![A-Za-z_\-])|(?P<op><=|>=|!=|==|=|<|>)|(?P<punct>[(),\]%])"""
    r"""|\[(?P<key>[^\]]*)\]|"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<word>[A-Za-z0-9_][A-Za-z0-9_.\-:]*))"""
)
_KEY = re.compile(r"[A-Za-z0-9_.:\- ]{1,64}")
_KEYWORDS = {"and", "or", "not", "in", "between"}
_OPS = {"=", "!=", "<", "<=", ">", ">="}


class ConditionError(ValueError):
    """The condition cannot be used; the message names the part and the fix."""


class _Token:
    __slots__ = ("kind", "pos", "text", "value")

    def __init__(self, kind: str, value, text: str, pos: int):
        self.kind, self.value, self.text, self.pos = kind, value, text, pos


def _tokens(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            raise ConditionError(f'cannot read "{text[start : start + 20]}" (character {start + 1})')
        kind = match.lastgroup
        raw = match.group(kind)
        start = match.start(kind) - (1 if kind in ("key", "dq", "sq") else 0)
        if kind == "num":
            tokens.append(_Token("num", float(raw) if "." in raw else int(raw), raw, start))
        elif kind == "word" and raw.lower() in _KEYWORDS:
            tokens.append(_Token("kw", raw.lower(), raw, start))
        elif kind in ("dq", "sq"):
            tokens.append(_Token("word", raw, f'"{raw}"', start))
        else:
            tokens.append(_Token(kind, "=" if raw == "==" else raw, raw, start))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.comparisons = 0

    def peek(self, kind: str | None = None, value=None) -> _Token | None:
        token = self.tokens[self.at] if self.at < len(self.tokens) else None
        if token is None or (kind and token.kind != kind) or (value is not None and token.value != value):
            return None
        return token

    def take(self, kind: str | None = None, value=None) -> _Token | None:
        token = self.peek(kind, value)
        if token is not None:
            self.at += 1
        return token

    def fail(self, message: str, token: _Token | None = None):
        token = token or self.peek()
        where = f' at "{token.text}" (character {token.pos + 1})' if token else " at the end"
        raise ConditionError(f"{message}{where}")

    def parse(self) -> list:
        if not self.tokens:
            raise ConditionError('is empty; write a condition such as "session.cart_adds >= 1"')
        tree = self.expression(0)
        if self.peek() is not None:
            self.fail('expected "and", "or" or the end')
        return tree

    def expression(self, depth: int) -> list:
        parts = [self.term(depth)]
        while self.take("kw", "or"):
            parts.append(self.term(depth))
        return parts[0] if len(parts) == 1 else ["or", *parts]

    def term(self, depth: int) -> list:
        parts = [self.factor(depth)]
        while self.take("kw", "and"):
            parts.append(self.factor(depth))
        return parts[0] if len(parts) == 1 else ["and", *parts]

    def factor(self, depth: int) -> list:
        if depth >= MAX_DEPTH:
            self.fail(f"nests too deep; use at most {MAX_DEPTH} levels of parentheses and not")
        if self.take("kw", "not"):
            return ["not", self.factor(depth + 1)]
        opening = self.take("punct", "(")
        if opening:
            inner = self.expression(depth + 1)
            if not self.take("punct", ")"):
                self.fail(f'expected ")" to close the "(" at character {opening.pos + 1}')
            return inner
        return self.comparison()

    def field(self) -> tuple[str, str, str]:
        token = self.take("word")
        if token is None:
            self.fail("expected a fact such as session.cart_adds, stage or device")
        name = token.value.lower()
        if name == INTENT_FACT:
            return self.intent(token)
        key_token = self.take("key")
        if key_token is not None:
            if name not in KEYED_FIELDS:
                self.fail(f"{name} takes no name in brackets; those that do: {', '.join(KEYED_FIELDS)}", key_token)
            key = key_token.value.strip()
            if not _KEY.fullmatch(key):
                self.fail(
                    f"the name in brackets must be 1 to {MAX_KEY_CHARS} letters, digits, spaces or _ . : -", key_token
                )
            return name, key, NUMBER
        if name not in FIELDS:
            if name in KEYED_FIELDS:
                self.fail(f"{name} needs a name in brackets, e.g. {name}[trail-shoes]", token)
            close = difflib.get_close_matches(name, [*FIELDS, *KEYED_FIELDS], n=1)
            hint = f"did you mean {close[0]}?" if close else "see the list of facts under the conditions box"
            self.fail(f"{name} is not a fact Kairos knows; {hint}", token)
        return name, "", FIELDS[name][0]

    def intent(self, token: _Token) -> tuple[str, str, str]:
        """ "intent planning-a-trip" (or intent[planning-a-trip]): a named intent's score, 0 to 1."""
        key_token = self.take("key") or self.take("word")
        key = str(key_token.value).strip().lower() if key_token else ""
        if key_token is None or not INTENT_KEY.fullmatch(key):
            self.fail(
                "intent needs the key of one of the project's intents, as in intent planning-a-trip >= 0.35"
                " (Segments → Intents lists them)",
                key_token or token,
            )
        return INTENT_FACT, key, NUMBER

    def value(self, name: str, kind: str):
        token = self.take("num") or self.take("word")
        if token is None:
            self.fail(f"expected a value for {name}")
        if kind == NUMBER:
            if token.kind != "num":
                self.fail(f"{name} is a number; compare it with a number", token)
            if abs(token.value) > MAX_NUMBER:
                self.fail(f"numbers must be between -{MAX_NUMBER:.0f} and {MAX_NUMBER:.0f}", token)
            if name == INTENT_FACT and not 0 <= token.value <= 1:
                self.fail("an intent's score runs from 0 to 1; write e.g. intent planning-a-trip >= 0.35", token)
            if name in PROBABILITIES and not 0 <= token.value <= 1:
                self.fail(
                    f"{name} is a chance from 0 to 1; write e.g. {name} >= 0.8, or {name} top 10% for the top tenth",
                    token,
                )
            if name.endswith(".top_percent") and not 0 <= token.value <= 100:
                self.fail(f"{name} is a percent from 0 to 100", token)
            return token.value
        text = str(token.value).strip().lower()
        allowed = FIELDS[name][1]
        if kind == ENUM and text not in allowed:
            self.fail(f'"{text}" is not a value of {name}; use one of {", ".join(allowed)}', token)
        if kind == TEXT and not 1 <= len(text) <= MAX_KEY_CHARS:
            self.fail(f"the value of {name} must be 1 to {MAX_KEY_CHARS} characters", token)
        return text

    def comparison(self) -> list:
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            self.fail(f"has too many comparisons; use at most {MAX_COMPARISONS}")
        name, key, kind = self.field()
        top = self.peek("word")
        if top is not None and str(top.value).lower() == "top":
            return self.top(name, top)
        following = self.tokens[self.at + 1] if self.at + 1 < len(self.tokens) else None
        negated = bool(self.peek("kw", "not") and following and following.kind == "kw" and following.value == "in")
        if negated:
            self.at += 1
        if self.take("kw", "in"):
            if kind == NUMBER:
                self.fail(f"{name} is a number; compare it with =, <, >, <=, >= or between", self.tokens[self.at - 1])
            values = [self.value(name, kind)]
            while self.take("punct", ","):
                values.append(self.value(name, kind))
            if len(values) > MAX_VALUES:
                self.fail(f"lists at most {MAX_VALUES} values after in")
            return ["in", name, key, values, negated]
        between = self.take("kw", "between")
        if between:
            if kind != NUMBER:
                self.fail(f"{name} is not a number; use = or in", between)
            low = self.value(name, kind)
            if not self.take("kw", "and"):
                self.fail(f'expected "and" as in "{name} between 18 and 23"')
            high_token = self.peek()
            high = self.value(name, kind)
            # An hour range may wrap midnight (22 to 2); any other range is written low to high.
            if low > high and name != "local_hour":
                self.fail(f"write the smaller number first: between {high} and {low}", high_token)
            return ["between", name, key, low, high]
        op = self.take("op")
        if op is None:
            self.fail(f"expected =, !=, <, <=, >, >=, in or between after {name}")
        if kind != NUMBER and op.value not in ("=", "!="):
            self.fail(f"{name} is not a number; use =, != or in", op)
        return ["cmp", name, key, op.value, self.value(name, kind)]

    def top(self, name: str, top: _Token) -> list:
        """ "likely_to_buy top 10%": the top 10 percent of everyone scored, as a comparison of the score's place."""
        self.at += 1
        if name not in SCORES:
            self.fail(f'"top" goes after a score: {", ".join(SCORES)}; e.g. likely_to_buy top 10%', top)
        token = self.take("num")
        if token is None or not 0 < token.value <= 100:
            self.fail(f"expected a percent above 0 and at most 100 after top, as in {name} top 10%", token)
        self.take("punct", "%")
        return ["cmp", top_fact(name), "", "<=", token.value]


def condition_parse(text: object) -> list | None:
    """The compiled condition, None for an empty one (no condition: everyone), or ConditionError."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ConditionError('must be text, e.g. "stage in comparing, deciding"')
    if len(text) > MAX_CHARS:
        raise ConditionError(f"is {len(text)} characters long; keep it to {MAX_CHARS}")
    if not _ALLOWED.fullmatch(text):
        bad = next(c for c in text if not _ALLOWED.fullmatch(c))
        raise ConditionError(
            f"contains {bad!r} (character {text.index(bad) + 1}); "
            "use letters, digits, spaces and _ . - : , ( ) [ ] = < > ! % quotes"
        )
    if not text.strip():
        return None
    return _Parser(text).parse()


def _value_text(value) -> str:
    if isinstance(value, str):
        return (
            value if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-:]*", value) and value not in _KEYWORDS else f'"{value}"'
        )
    return str(value)


def condition_text(compiled: list) -> str:
    """The canonical sentence of a compiled condition (fully parenthesised where it nests)."""
    head = compiled[0]
    if head in ("and", "or"):
        return f" {head} ".join(
            f"({condition_text(c)})" if c[0] in ("and", "or") else condition_text(c) for c in compiled[1:]
        )
    if head == "not":
        inner = compiled[1]
        return f"not ({condition_text(inner)})" if inner[0] in ("and", "or") else f"not {condition_text(inner)}"
    field = compiled[1] + (f"[{compiled[2]}]" if compiled[2] else "")
    if compiled[1] == INTENT_FACT:
        field = f"{INTENT_FACT} {compiled[2]}"
    if head == "cmp":
        if field.endswith(TOP_SUFFIX) and compiled[3] == "<=" and 0 < compiled[4] <= 100:
            return f"{field.removesuffix(TOP_SUFFIX)} top {compiled[4]}%"
        return f"{field} {compiled[3]} {_value_text(compiled[4])}"
    if head == "in":
        return f"{field} {'not in' if compiled[4] else 'in'} {', '.join(_value_text(v) for v in compiled[3])}"
    return f"{field} between {compiled[3]} and {compiled[4]}"


# --- evaluation ----------------------------------------------------------------------------------

Facts = dict  # field -> value; keyed fields as "name[]" -> {key: number}

_COMPARE: dict[str, Callable] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _reader(name: str, key: str) -> Callable[[Facts], object]:
    if name == INTENT_FACT:
        # Unknown for someone not scored (no field): every comparison false, as for a predictive score.
        return lambda facts: (facts.get(INTENT_FACT + "[]") or {}).get(key)
    if key:
        slot = name + "[]"
        return lambda facts: (facts.get(slot) or {}).get(key, 0)
    return lambda facts: facts.get(name)


def condition_function(compiled: list | None) -> Callable[[Facts], bool]:
    """A function of the facts, built once per snapshot: evaluation is then a few closure calls."""
    if compiled is None:
        return lambda facts: True
    head = compiled[0]
    if head in ("and", "or"):
        parts = [condition_function(c) for c in compiled[1:]]
        if head == "and":
            return lambda facts: all(p(facts) for p in parts)
        return lambda facts: any(p(facts) for p in parts)
    if head == "not":
        inner = condition_function(compiled[1])
        return lambda facts: not inner(facts)
    read = _reader(compiled[1], compiled[2])
    if head == "cmp":
        compare, wanted = _COMPARE[compiled[3]], compiled[4]
        return lambda facts: (value := read(facts)) is not None and compare(value, wanted)
    if head == "in":
        wanted_set, negated = frozenset(compiled[3]), compiled[4]
        return lambda facts: (value := read(facts)) is not None and ((value in wanted_set) != negated)
    low, high = compiled[3], compiled[4]
    if low <= high:
        return lambda facts: (value := read(facts)) is not None and low <= value <= high
    return lambda facts: (value := read(facts)) is not None and (value >= low or value <= high)


def condition_fields(compiled: list | None) -> set[str]:
    """The facts a condition reads: what an exposure records of the targeting that used it."""
    if compiled is None:
        return set()
    if compiled[0] in ("and", "or"):
        return set().union(*(condition_fields(c) for c in compiled[1:]))
    if compiled[0] == "not":
        return condition_fields(compiled[1])
    return {compiled[1] + (f"[{compiled[2]}]" if compiled[2] else "")}


def condition_intents(compiled: list | None) -> set[str]:
    """The keys of the intents a condition reads (each must be one of the project's intents)."""
    prefix = INTENT_FACT + "["
    return {field[len(prefix) : -1] for field in condition_fields(compiled) if field.startswith(prefix)}


def facts_of(view: SessionView, context: dict, stage: str) -> Facts:
    """The facts of one decide request: the live state as of now, the derived context
    ({"local_hour", "weekday", "device", "referrer"}) and the journey stage. A session that has ended
    reads as a new one that has no events yet; facts across sessions stay."""
    live = not view.ended
    cart = view.cart_open
    return {
        "session.events": view.events if live else 0,
        "session.page_views": view.page_views if live else 0,
        "session.items_viewed": view.items_viewed if live else 0,
        "session.searches": view.searches if live else 0,
        "session.search_refinements": view.search_refinements if live else 0,
        "session.cart_adds": view.cart_adds if live else 0,
        "session.cart_removes": view.cart_removes if live else 0,
        "session.purchases": view.purchases if live else 0,
        "session.checkout_views": view.checkout_views if live else 0,
        "session.minutes": (view.now - view.started) / 60 if live and view.started else 0,
        "session.channel": view.session_channel.lower() if live and view.session_channel else None,
        "session.category_views[]": view.category_views if live else {},
        "session.category_item_views[]": view.category_item_views if live else {},
        "session.events[]": view.events_by_type if live else {},
        "sessions_30d": view.sessions_30d,
        "days_since_last_session": view.days_since_last_session,
        "minutes_since_cart_add": view.minutes_since_cart_add,
        "cart_item": cart[1].lower() if cart else None,
        "tenure_days": view.tenure_days,
        # A known visitor whose first visit came with no channel came direct: the same word the
        # timeline and the first-touch class use. Unknown only without any live state.
        "first_touch": view.first_touch.lower() or ("direct" if view.known else None),
        "local_hour": context.get("local_hour"),
        "weekday": context.get("weekday"),
        "device": context.get("device"),
        "referrer": context.get("referrer"),
        "visitor": "returning" if view.returning else "new",
        "stage": stage,
    }


def _fact_value(facts: Facts, name: str):
    if name.endswith("]") and "[" in name:
        base, key = name[:-1].split("[", 1)
        return (facts.get(base + "[]") or {}).get(key, 0)
    return facts.get(name)


def facts_record(facts: Facts, fields) -> dict | None:
    """What an exposure keeps of the request's facts: the stage, new or returning, the first touch's
    referrer class (a class, not the host, so a breakdown stays a handful of rows), whole days since
    first seen, and each fact in `fields` (those the experience's conditions read). None when the
    facts are not known."""
    if not facts:
        return None
    tenure = facts.get("tenure_days")
    record = {
        "stage": facts.get("stage"),
        "visitor": facts.get("visitor"),
        "first_touch": facts.get("first_touch_class"),
        "tenure_days": None if tenure is None else int(tenure),
        "device": facts.get("device"),  # the device class (mobile, desktop, ...), for the lift breakdown
    }
    for name in fields:
        value = _fact_value(facts, name)
        record[name] = round(value, 2) if isinstance(value, float) else value
    # The visitor's intent scores, in every arm, so a lift report can break down by intent at exposure
    # (like the stage); only for someone scored, so other exposures keep their shape.
    intents = facts.get(INTENT_FACT + "[]")
    if intents:
        record["intents"] = {key: round(score, 2) for key, score in intents.items()}
    # The predictive scores as decide read them (models trained on what came before): the covariate
    # of CUPAC in the lift report, frozen at exposure so the variant shown cannot have moved it.
    scores = {name: round(facts[name], 4) for name in SCORES if isinstance(facts.get(name), float)}
    if scores:
        record["scores"] = scores
    return record


# Looked up once, not per decide request: facts_check runs on every request with conditions.
_NUMBER_FIELDS = tuple(name for name, (kind, _, _) in FIELDS.items() if kind == NUMBER)
_KEYED_FACTS = (*((name, name + "[]", None) for name in KEYED_FIELDS), (INTENT_FACT, INTENT_FACT + "[]", {}))
_NUMBERS = (int, float)  # by exact class: a bool (an int subclass) is not a number here


def facts_check(facts: Facts) -> None:
    """ValueError unless every number fact is a number (or unknown) and every keyed fact maps names
    to numbers: a state written by anything but the events script must not reach a comparison."""
    get = facts.get
    for name in _NUMBER_FIELDS:
        value = get(name)
        if value is not None and value.__class__ not in _NUMBERS:
            raise ValueError(f"{name} is {type(value).__name__}, not a number")
    # Intent scores are absent for someone never scored: an empty map, not an error.
    for name, key, default in _KEYED_FACTS:
        mapping = get(key, default)
        if mapping.__class__ is not dict or not all(v.__class__ in _NUMBERS for v in mapping.values()):
            raise ValueError(f"{name} is not a map of numbers")
