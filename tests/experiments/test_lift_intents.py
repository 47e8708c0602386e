"""Lift broken down by a named intent at exposure: each exposure keeps the visitor's intent scores (in
its live record), and "intent:<key>" splits people at 0.35 (the default threshold) into yes / no / not scored."""

from datetime import UTC, datetime

import numpy as np
import pytest

from experiments import selectors
from experiments.breakdown import MISSING_LABEL, NO_SEGMENT, Breakdown, BreakdownError
from personalization.experiences.conditions import facts_record
from personalization.intent_fields import intents_parse
from personalization.models import Exposure, Profile
from segments import services as segments_services
from tests.factories import exposures_simulated, lift_compute_recent, rows_copy

NOW = datetime.now(UTC)


def _live(i: int) -> dict | None:
    """Every 7th exposure recorded before live state was kept; every 5th not scored on the intent."""
    if i % 7 == 0:
        return None
    if i % 5 == 0:
        return {"stage": "exploring", "intents": {"other": 0.9}}
    return {"stage": "exploring", "intents": {"planning-a-trip": 0.8 if i % 2 else 0.1}}


def _expected(live: dict | None) -> str:
    if live is None:
        return MISSING_LABEL
    score = live["intents"].get("planning-a-trip")
    return NO_SEGMENT if score is None else ("yes" if score >= 0.35 else "no")


@pytest.mark.django_db
def test_lift_by_intent__counts_match_the_database_and_the_planted_sign(project):
    lives = [_live(i) for i in range(3000)]
    profiles = rows_copy(Profile, (Profile(project=project, first_seen=NOW, last_seen=NOW) for _ in lives))
    exposures_simulated(
        project=project,
        people=list(zip(profiles, lives, strict=True)),
        rng=np.random.default_rng(5),
        held_arm="holdout_experience",
        effect=lambda live: 0.15 if _expected(live) == "yes" else 0.0,
        recorded=lambda live: {"live": live},
    )
    result = lift_compute_recent(project=project, segment_by="intent:planning-a-trip")
    segments = {s["name"]: s["conversion"] for s in result["report"]["segments"]}
    assert set(segments) == {"yes", "no", NO_SEGMENT, MISSING_LABEL}
    rows = list(Exposure.objects.filter(project=project))
    for name, conversion in segments.items():
        treated = sum(1 for r in rows if _expected(r.live) == name and r.arm == "variant")
        held = sum(1 for r in rows if _expected(r.live) == name and r.arm != "variant")
        assert (conversion["users_treatment"], conversion["users_holdout"]) == (treated, held), name
    assert segments["yes"]["absolute_lift"]["value"] > 0.05
    assert result["segment_labels"]["yes"] == "planning-a-trip: score 0.35 or more"


def test_facts_record__scored_visitor__keeps_intent_scores_others_keep_their_shape():
    facts = {"stage": "comparing", "visitor": "new", **intents_parse("planning-a-trip=0.834 other=0")}
    assert facts_record(facts, [])["intents"] == {"planning-a-trip": 0.83, "other": 0.0}
    assert "intents" not in facts_record({"stage": "comparing", "visitor": "new"}, [])


def test_breakdown_parse__intent_key__named_and_bad_keys_refused():
    assert Breakdown.parse("intent:planning-a-trip").label == "intent planning-a-trip at exposure"
    with pytest.raises(BreakdownError, match="intent:<intent key>"):
        Breakdown.parse("intent:Planning Trip")


@pytest.mark.django_db
def test_lift_choices__project_with_an_intent__offers_it(project):
    examples = ["visa rules", "travel insurance", "hotel near the station"]
    segments_services.intent_create(project_id=project.pk, name="planning a trip", examples=examples)
    groups = dict(selectors.lift_segmentation_choices(project_id=project.pk))
    assert groups["Intents at exposure"] == [("intent:planning-a-trip", "Intent: planning a trip (0.35 or more)")]
