"""A per-segment bandit that learns on the visitor's live state (`live:stage`): decide keys the
weights on the request's journey stage, the bandit update on the stage each exposure recorded."""

import uuid

import numpy as np
import pytest
from django.utils import timezone

from personalization import services
from personalization.decide import engine
from personalization.experiences.services import ExperienceError
from personalization.models import Exposure
from tests import factories
from tests.personalization.test_decide import drain_all, make_experience, post_decide


def _snapshot() -> dict:
    """One per-segment bandit "hero" on the journey stage, no holdouts: b for comparing visitors, a
    for exploring ones, an even split for everyone else."""
    snapshot, _ = factories.engine_snapshot(
        holdout_share=0.0,
        segment_field="live:stage",
        weights={"comparing": [0.0, 1.0], "exploring": [1.0, 0.0], "": [0.5, 0.5]},
    )
    snapshot["holdout"]["share"] = 0.0
    return snapshot


def _facts(stage: str, calls: list):
    def live() -> dict:
        calls.append(stage)
        return {"stage": stage, "visitor": "returning", "first_touch_class": "search", "tenure_days": 3}

    return live


def test_decide_unit__live_stage_source__weights_of_the_request_stage_and_recorded_in_the_exposure():
    snapshot = _snapshot()
    for stage, variant in (("comparing", "b"), ("exploring", "a")):
        for n in range(50):
            decision = engine.decide_unit(snapshot, f"u{n}", {"x": "1"}, {}, live=_facts(stage, []))
            assert decision.assignments["hero"]["variant"] == variant
            assert decision.assignments["hero"]["reason"] == "segment_bandit"
            (exposure,) = decision.exposures
            assert exposure["segment"] == stage and exposure["live"]["stage"] == stage
    # A stage without weights of its own takes the global ones.
    decision = engine.decide_unit(snapshot, "u1", {"x": "1"}, {}, live=_facts("deciding", []))
    assert decision.assignments["hero"]["reason"] == "bandit" and decision.exposures[0]["segment"] == "deciding"


def test_decide_unit__live_stage_source__without_redis_or_opted_out__the_stage_is_not_read():
    snapshot = _snapshot()
    calls: list = []
    decision = engine.decide_unit(snapshot, "u1", {}, {}, fallback=True, live=_facts("comparing", calls))
    assert decision.exposures[0]["segment"] == "" and decision.exposures[0]["live"] is None
    assert decision.assignments["hero"]["reason"] == "fallback"
    assert calls == []  # the state was not read: a stage computed from nothing would be a guess
    engine.decide_unit(snapshot, "u1", {"dnp": "1"}, {}, live=_facts("comparing", calls))
    assert calls == []


def test_unit_segment__live_sources__each_field_and_unknown_ones_empty():
    live = _facts("comparing", [])
    assert engine.unit_segment({"segment_field": "live:stage"}, {}, {}, live) == "comparing"
    assert engine.unit_segment({"segment_field": "live:visitor"}, {}, {}, live) == "returning"
    assert engine.unit_segment({"segment_field": "live:first_touch"}, {}, {}, live) == "search"
    assert engine.unit_segment({"segment_field": "live:cart"}, {}, {}, live) == ""
    assert engine.unit_segment({"segment_field": "live:stage"}, {}, {}) == ""  # no facts: not known


@pytest.mark.django_db
def test_experience_save__live_source__known_fields_accepted_others_400_naming_the_field(project):
    experience = make_experience(project, policy="segment_bandit", segment_attribute="live:stage")
    assert services.snapshot_compile(project_id=project.pk)["experiences"]["hero"]["segment_field"] == "live:stage"
    with pytest.raises(ExperienceError) as raised:
        make_experience(project, key="other", policy="segment_bandit", segment_attribute="live:cart")
    assert raised.value.field == "segment_attribute"
    assert "live:stage, live:visitor, live:first_touch" in raised.value.message
    assert experience.segment_attribute == "live:stage"


@pytest.mark.django_db
def test_bandit_update__live_stage_source__weights_per_recorded_stage_follow_the_planted_effect(project):
    """Comparing visitors convert on b, exploring ones on a; exposures without live state (and the
    `segment` column, which says something else) must not decide the stages' weights."""
    experience = make_experience(
        project, policy="segment_bandit", segment_attribute="live:stage", bandit_burn_in=20, bandit_floor=0.01
    )
    keys = list(experience.variants.values_list("key", flat=True))  # v0 (control), v1, v2
    rates = {"comparing": {"v0": 0.04, "v1": 0.25, "v2": 0.04}, "exploring": {"v0": 0.25, "v1": 0.04, "v2": 0.04}}
    rng = np.random.default_rng(3)
    cells = [(stage, key) for stage in (*rates, None) for key in keys]
    profiles = factories.profiles_make(project=project, count=400 * len(cells))
    rows = []
    for i, profile_id in enumerate(profiles):
        stage, key = cells[i % len(cells)]
        rate = 0.1 if stage is None else rates[stage][key]
        rows.append(
            Exposure(
                project=project,
                profile_id=profile_id,
                experience_key="hero",
                variant_key=key,
                arm="variant",
                segment="ignored",
                live=None if stage is None else {"stage": stage, "visitor": "new"},
                exposed_at=timezone.now(),
                converted=bool(rng.random() < rate),
            )
        )
    factories.rows_copy(Exposure, rows)

    weights = services.bandit_update(experience_id=experience.pk)
    assert set(weights) == {"", "comparing", "exploring"}
    comparing = dict(zip(keys, weights["comparing"], strict=True))
    exploring = dict(zip(keys, weights["exploring"], strict=True))
    assert comparing["v1"] > 0.9 and exploring["v0"] > 0.9
    # Every exposure is in the global bandit's counts, those without live state included.
    stats = experience.weight_history.filter(segment="").latest("computed_at").stats
    assert sum(n for n, _ in stats.values()) == len(rows)
    by_stage = experience.weight_history.filter(segment="comparing").latest("computed_at").stats
    assert by_stage == {
        key: [
            sum(1 for r in rows if r.live and r.live["stage"] == "comparing" and r.variant_key == key),
            sum(1 for r in rows if r.live and r.live["stage"] == "comparing" and r.variant_key == key and r.converted),
        ]
        for key in keys
    }


def _page_view(visitor: str, item: str) -> dict:
    return {
        "event_id": uuid.uuid4().hex,
        "type": "page_view",
        "anonymous_id": visitor,
        "timestamp": timezone.now().isoformat(),
        "properties": {"item": item, "category": "trail-shoes", "url": f"/p/{item}"},
    }


@pytest.mark.django_db
def test_decide__stage_bandit__segment_is_the_stage_of_the_request_then_the_update_learns_per_stage(
    client, project, public_key
):
    """Through the events and decide endpoints: visitors who viewed three trail shoes are exposed as
    "comparing", those who viewed one as "exploring"; the drained exposures say so in both columns,
    and the update then gives each stage weights of its own, compiled for decide."""
    services.project_holdout_set(project=project, share=0)
    experience = make_experience(project, policy="segment_bandit", segment_attribute="live:stage", bandit_burn_in=1)
    visitors = {f"v-c{n}": 3 for n in range(10)} | {f"v-e{n}": 1 for n in range(10)}
    for visitor, items in visitors.items():
        response = factories.events_post(client, public_key, [_page_view(visitor, f"shoe-{i}") for i in range(items)])
        assert response.status_code == 200, response.content
        status, answer = post_decide(client, public_key, {"anonymous_id": visitor})
        assert status == 200 and answer["assignments"]["hero"]["reason"] == "bandit"  # no stage weights yet
    drain_all()
    rows = list(Exposure.objects.filter(project=project, experience_key="hero").values("segment", "live"))
    assert len(rows) == len(visitors)
    assert sorted(row["segment"] for row in rows) == ["comparing"] * 10 + ["exploring"] * 10
    assert all(row["segment"] == row["live"]["stage"] for row in rows)

    assert set(services.bandit_update(experience_id=experience.pk)) == {"", "comparing", "exploring"}
    # What decide serves next (the engine test above shows it picks the request stage's weights).
    served = services.snapshot_compile(project_id=project.pk)["experiences"]["hero"]
    assert served["segment_field"] == "live:stage" and {"comparing", "exploring"} <= set(served["weights"])
