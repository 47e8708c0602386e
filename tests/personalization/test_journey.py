"""The journey stage of a session and its reason, from the live state as of now."""

import pytest

from personalization.people import journey
from personalization.people.live_session import session_view

NOW = 1_780_000_000


def _view(now_minutes: float = 6, **state):
    """A state as the script writes it, started at NOW, last event `last` minutes after."""
    last = state.pop("last", 6)
    base = {"v": 1, "ss": NOW, "sl": NOW + last * 60, "fs": NOW, "sd": [[NOW // 86400, 1]]}
    return session_view({**base, **state}, now=NOW + now_minutes * 60)


def test_stage_of__three_items_of_one_category_and_refined_searches__is_comparing_with_the_reason():
    view = _view(ni=3, c=[["trail-shoes", 3, 3]], q=3, qr=2, pv=4)
    assert journey.stage_of(view) == journey.Stage("comparing", "3 trail shoes viewed in 6 minutes, 2 searches refined")


@pytest.mark.parametrize(
    ("state", "now_minutes", "stage"),
    [
        ({"pv": 2, "c": [["tents", 2, 0]]}, 6, "exploring"),
        ({"ni": 5, "pv": 5}, 6, "comparing"),
        ({"ld": 2, "pv": 2}, 6, "comparing"),
        ({"ca": 1, "ac": [NOW + 300, "tent-2"]}, 6, "deciding"),
        ({"ck": 1}, 6, "deciding"),
        ({"ca": 1, "ac": [NOW + 300, "tent-2"]}, 40, "abandoned"),  # idle past 30 minutes
        ({"ca": 1, "pu": 1}, 6, "bought"),
        ({"ca": 1, "pu": 1}, 60, "bought"),  # a bought session stays bought once ended
        ({"pv": 2}, 60, "exploring"),  # ended without a cart: not abandoned
    ],
)
def test_stage_of__each_stage(state, now_minutes, stage):
    assert journey.stage_of(_view(now_minutes, **state)).stage == stage


def test_stage_of__no_state__is_exploring():
    assert journey.stage_of(session_view(None, now=NOW)).stage == "exploring"


def test_stage_of__abandoned_reason__says_when_the_cart_was_left():
    result = journey.stage_of(_view(50, ca=2, ac=[NOW + 300, "tent-2"]))
    assert result == journey.Stage("abandoned", "2 cart adds, no purchase, session ended, last cart add 45 minutes ago")


def test_journey_definition__a_project_threshold__changes_the_stage():
    view = _view(ni=3, c=[["trail-shoes", 3, 3]])
    assert journey.stage_of(view).stage == "comparing"
    stricter = journey.journey_definition({"comparing": {"items_in_one_category": 4}})
    assert journey.stage_of(view, stricter).stage == "exploring"
    assert journey.DEFAULT_DEFINITION[3]["any"]["items_in_one_category"] == 3  # the default is untouched


@pytest.mark.parametrize(
    ("overrides", "field", "fix"),
    [
        ({"shopping": {}}, "journey.shopping", "use one of bought, abandoned"),
        ({"comparing": {"cart_adds": 2}}, "journey.comparing.cart_adds", "use one of items_in_one_category"),
        ({"comparing": {"items_viewed": 0}}, "journey.comparing.items_viewed", "from 1 to 10000"),
        ({"comparing": {"items_viewed": 2.5}}, "journey.comparing.items_viewed", "whole number"),
        ({"comparing": {"items_viewed": True}}, "journey.comparing.items_viewed", "whole number"),
        ({"exploring": {"page_views": 1}}, "journey.exploring.page_views", "has no thresholds"),
        ({"abandoned": {"session_ended": 2}}, "journey.abandoned.session_ended", "must be 1"),
        ({"deciding": 3}, "journey.deciding", "measure → threshold"),
        ([1], "journey", "stage →"),
    ],
)
def test_journey_definition__bad_thresholds__name_the_field_and_the_fix(overrides, field, fix):
    with pytest.raises(journey.JourneyDefinitionError) as error:
        journey.journey_definition(overrides)
    assert error.value.field == field and fix in error.value.message


def test_definition_sentences__read_in_the_order_the_rules_are_tried():
    lines = journey.definition_sentences()
    assert lines[0] == "A session is bought when purchases ≥ 1."
    assert lines[1] == "Otherwise abandoned when cart adds ≥ 1 and the session has ended."
    assert lines[3].startswith("Otherwise comparing when any of: items viewed in one category ≥ 3")
    assert lines[-1] == "Otherwise exploring (every other session)."
