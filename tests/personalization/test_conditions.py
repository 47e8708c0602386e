"""Targeting conditions: parsed and checked at save time, compiled for the snapshot, evaluated in decide."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personalization.experiences import conditions as cond
from personalization.people.live_session import session_view

NOW = 1_780_000_000


def _facts(**overrides) -> dict:
    base = {
        "session.cart_adds": 1,
        "session.purchases": 0,
        "session.category_views[]": {"trail-shoes": 3},
        "session.events[]": {"click": 2},
        "minutes_since_cart_add": 12.0,
        "days_since_last_session": None,
        "local_hour": 20,
        "device": "tablet",
        "stage": "comparing",
        "referrer": "search",
        "first_touch": "newsletter",
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("text", "facts", "expected"),
    [
        ("session.cart_adds >= 1 and session.purchases = 0", {}, True),
        ("session.cart_adds >= 1 and session.purchases = 0", {"session.purchases": 1}, False),
        ("minutes_since_cart_add <= 30", {}, True),
        ("minutes_since_cart_add <= 30", {"minutes_since_cart_add": None}, False),
        ("stage in comparing, deciding", {}, True),
        ("stage in comparing, deciding", {"stage": "bought"}, False),
        ("stage not in comparing, deciding", {"stage": "bought"}, True),
        ("session.category_views[trail-shoes] >= 2", {}, True),
        ("session.category_views[rain-jackets] >= 1", {}, False),  # not viewed: 0
        ("session.events[click] = 2", {}, True),
        ("local_hour between 18 and 23", {}, True),
        ("local_hour between 18 and 23", {"local_hour": 23}, True),
        ("local_hour between 18 and 23", {"local_hour": 9}, False),
        ("local_hour between 22 and 2", {"local_hour": 1}, True),  # wraps midnight
        ("local_hour between 22 and 2", {"local_hour": 12}, False),
        ("days_since_last_session >= 7", {}, False),  # unknown: false
        ("days_since_last_session != 7", {}, False),  # unknown is false for != too
        ("not days_since_last_session >= 7", {}, True),
        ("days_since_last_session >= 7", {"days_since_last_session": 10.5}, True),
        ("device = tablet", {}, True),
        ("DEVICE = Tablet", {}, True),  # names and values are read in any case
        ("device = tablet or (stage = bought and referrer = paid)", {"device": "mobile"}, False),
        ("first_touch = newsletter", {}, True),
        ('first_touch = "newsletter"', {}, True),
        ("", {}, True),
    ],
)
def test_condition__reads_as_written(text, facts, expected):
    compiled = cond.condition_parse(text)
    assert cond.condition_function(compiled)(_facts(**facts)) is expected


def test_condition_parse__compiles_to_a_small_json_structure():
    assert cond.condition_parse("session.cart_adds >= 1 and stage in comparing, deciding") == [
        "and",
        ["cmp", "session.cart_adds", "", ">=", 1],
        ["in", "stage", "", ["comparing", "deciding"], False],
    ]
    assert cond.condition_parse("session.category_views[trail-shoes] >= 2") == [
        "cmp",
        "session.category_views",
        "trail-shoes",
        ">=",
        2,
    ]
    assert cond.condition_parse("local_hour between 18 and 23") == ["between", "local_hour", "", 18, 23]
    assert cond.condition_parse("   ") is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("stage in comparing, shopping", '"shopping" is not a value of stage; use one of bought, abandoned'),
        ("device = phone", "use one of mobile, tablet, desktop"),
        ("session.cart_add >= 1", "did you mean session.cart_adds?"),
        ("session.cart_adds >= many", "session.cart_adds is a number; compare it with a number"),
        ("stage >= deciding", "stage is not a number; use =, != or in"),
        ("session.category_views >= 2", "needs a name in brackets, e.g. session.category_views[trail-shoes]"),
        ("local_hour[x] = 1", "local_hour takes no name in brackets"),
        ("session.cart_adds >= 1 and", "expected a fact"),
        ("session.cart_adds", "expected =, !=, <, <=, >, >=, in or between after session.cart_adds"),
        ("tenure_days between 30 and 7", "write the smaller number first: between 7 and 30"),
        ("local_hour between 18 23", 'expected "and" as in "local_hour between 18 and 23"'),
        ("(device = tablet", 'expected ")" to close the "(" at character 1'),
        ("device = tablet)", 'expected "and", "or" or the end at ")" (character 16)'),
        ("session.purchases in 1, 2", "is a number; compare it with =, <, >, <=, >= or between"),
        ("device = tablet; drop table", "contains ';' (character 16)"),
        ("session.cart_adds >= 1e12", 'is a number; compare it with a number at "1e12"'),
        ('device = tablet "', "cannot read"),
        ("tenure_days > 10000000000", "numbers must be between"),
        ("session.category_views[] >= 1", "the name in brackets must be 1 to 64"),
        ("x" * 501, "keep it to 500"),
        ("not " * 7 + "device = tablet", "nests too deep; use at most 6"),
        (" or ".join(["device = tablet"] * 21), "too many comparisons; use at most 20"),
        (12, "must be text"),
    ],
)
def test_condition_parse__errors_name_the_part_and_the_fix(text, says):
    with pytest.raises(cond.ConditionError) as error:
        cond.condition_parse(text)
    assert says in str(error.value)


def test_condition_fields__what_an_exposure_records():
    compiled = cond.condition_parse("stage = comparing and (session.category_views[tents] > 1 or not device = mobile)")
    assert cond.condition_fields(compiled) == {"stage", "session.category_views[tents]", "device"}


def test_facts_of__an_ended_session_reads_as_a_new_one_and_keeps_facts_across_sessions():
    state = {
        "v": 1,
        "ss": NOW,
        "sl": NOW + 300,
        "fs": NOW - 86400 * 40,
        "ca": 1,
        "pv": 3,
        "c": [["tents", 3, 2]],
        "ac": [NOW + 300, "tent-2"],
        "ft": "Newsletter",
        "sd": [[NOW // 86400, 1]],
    }
    ended = session_view(state, now=NOW + 3600)
    facts = cond.facts_of(ended, {"local_hour": 19, "device": "mobile"}, "abandoned")
    cart_back = cond.condition_function(cond.condition_parse("minutes_since_cart_add <= 60 and session.cart_adds = 0"))
    assert cart_back(facts)
    assert facts["session.category_views[]"] == {} and facts["visitor"] == "returning"
    assert facts["cart_item"] == "tent-2" and facts["first_touch"] == "newsletter"
    assert facts["tenure_days"] == pytest.approx(40 + 1 / 24)
    live = cond.facts_of(session_view(state, now=NOW + 600), {}, "deciding")
    assert live["session.cart_adds"] == 1 and live["session.category_views[]"] == {"tents": 3}
    assert live["visitor"] == "new" and live["session.minutes"] == pytest.approx(10)


# --- properties ----------------------------------------------------------------------------------

_NUMBER_FIELDS = [name for name, (kind, _, _) in cond.FIELDS.items() if kind == cond.NUMBER]
_ENUM_FIELDS = [name for name, (kind, _, _) in cond.FIELDS.items() if kind == cond.ENUM]
_numbers = st.integers(-1000, 1000) | st.floats(-1000, 1000, allow_nan=False).map(lambda x: round(x, 2))
_keys = st.from_regex(r"[a-z0-9][a-z0-9_.:\-]{0,10}", fullmatch=True)


def _value_of(field: str):
    """A number the parser takes for `field`: chances are 0 to 1, top percents 0 to 100."""
    if field in cond.PROBABILITIES:
        return st.floats(0, 1, allow_nan=False).map(lambda x: round(x, 2))
    if field.endswith(".top_percent"):
        return st.integers(0, 100)
    return _numbers


@st.composite
def _comparisons(draw):
    kind = draw(st.sampled_from(["cmp", "between", "in", "keyed"]))
    if kind == "keyed":
        field = draw(st.sampled_from(list(cond.KEYED_FIELDS)))
        return ["cmp", field, draw(_keys), draw(st.sampled_from(sorted(cond._OPS))), draw(_numbers)]
    if kind == "cmp":
        field = draw(st.sampled_from(_NUMBER_FIELDS))
        return ["cmp", field, "", draw(st.sampled_from(sorted(cond._OPS))), draw(_value_of(field))]
    if kind == "between":
        field = draw(st.sampled_from(_NUMBER_FIELDS))
        low, high = sorted([draw(_value_of(field)), draw(_value_of(field))])
        return ["between", field, "", low, high]
    field = draw(st.sampled_from(_ENUM_FIELDS))
    values = draw(st.lists(st.sampled_from(cond.FIELDS[field][1]), min_size=1, max_size=4))
    return ["in", field, "", values, draw(st.booleans())]


def _flat(head: str):
    """And/or nodes as the parser builds them: no node directly inside one of the same kind."""
    return lambda parts: [head, *[p for part in parts for p in (part[1:] if part[0] == head else [part])]]


_trees = st.recursive(
    _comparisons(),
    lambda inner: (
        st.lists(inner, min_size=2, max_size=3).map(_flat("and"))
        | st.lists(inner, min_size=2, max_size=3).map(_flat("or"))
        | inner.map(lambda c: ["not", c])
    ),
    max_leaves=8,
)


def _depth(tree) -> int:
    if tree[0] == "not":
        return 1 + _depth(tree[1])
    if tree[0] in ("and", "or"):
        return max(_depth(c) for c in tree[1:]) + (1 if tree[0] == "and" else 0)
    return 0


def _reference(tree, facts) -> bool:
    """The meaning of a compiled condition, written plainly: the oracle for condition_function."""
    head = tree[0]
    if head == "and":
        return all(_reference(c, facts) for c in tree[1:])
    if head == "or":
        return any(_reference(c, facts) for c in tree[1:])
    if head == "not":
        return not _reference(tree[1], facts)
    _, field, key = tree[:3]
    value = (facts.get(field + "[]") or {}).get(key, 0) if key else facts.get(field)
    if value is None:
        return False
    if head == "in":
        return (value in tree[3]) != tree[4]
    if head == "between":
        low, high = tree[3], tree[4]
        return low <= value <= high if low <= high else (value >= low or value <= high)
    return {"=": value == tree[4], "!=": value != tree[4], "<": value < tree[4], "<=": value <= tree[4]}.get(
        tree[3], value > tree[4] if tree[3] == ">" else value >= tree[4]
    )


@st.composite
def _random_facts(draw):
    facts = {name: draw(st.none() | _numbers) for name in _NUMBER_FIELDS}
    facts |= {name: draw(st.none() | st.sampled_from(cond.FIELDS[name][1])) for name in _ENUM_FIELDS}
    facts |= {name + "[]": draw(st.dictionaries(_keys, _numbers, max_size=3)) for name in cond.KEYED_FIELDS}
    return facts


@settings(max_examples=300, deadline=None)
@given(_trees)
def test_property__the_canonical_text_parses_back_to_the_same_condition(tree):
    text = cond.condition_text(tree)
    if len(text) > cond.MAX_CHARS or _depth(tree) >= cond.MAX_DEPTH:
        with pytest.raises(cond.ConditionError):
            cond.condition_parse(text)
        return
    assert cond.condition_parse(text) == tree


@settings(max_examples=300, deadline=None)
@given(_trees, _random_facts())
def test_property__the_compiled_function_means_what_the_condition_says(tree, facts):
    assert cond.condition_function(tree)(facts) is _reference(tree, facts)
    negated = cond.condition_function(["not", tree])(facts)
    assert negated is not _reference(tree, facts)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120) | st.from_regex(r"[a-z_. \[\]()=<>!,0-9-]{0,80}", fullmatch=True))
def test_property__any_text_is_a_condition_or_a_condition_error(text):
    try:
        compiled = cond.condition_parse(text)
    except cond.ConditionError as error:
        assert str(error)
        return
    if compiled is not None:
        assert cond.condition_parse(cond.condition_text(compiled)) == compiled
        assert isinstance(cond.condition_function(compiled)(_facts()), bool)


def test_facts_of__known_visitor_without_a_channel__first_touch_reads_direct_as_the_timeline_does():
    known = cond.facts_of(session_view({"fs": NOW, "sl": NOW, "ss": NOW}, now=NOW + 60), {}, "exploring")
    assert known["first_touch"] == "direct"
    assert cond.facts_of(session_view(None, now=NOW), {}, "exploring")["first_touch"] is None
