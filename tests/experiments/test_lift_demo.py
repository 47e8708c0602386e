"""Acceptance: on the demo data, segmented by the planted intent, the lift report finds the planted
heterogeneity — intents built to respond negatively show negative lift, positively positive."""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments import services
from experiments.segmentation import Segmentation
from personalization import demo
from personalization.services import demo as demo_services


@pytest.mark.slow
@pytest.mark.django_db
def test_lift__demo_by_planted_intent__finds_planted_signs(tmp_path):
    project = demo_services.demo_seed(profiles=12_000, days=7, seed=11, keys_path=tmp_path / "keys.json")
    end = timezone.now() + timedelta(minutes=1)
    result = services.lift_compute(
        project=project,
        experience_key="signup-popup",
        segmentation=Segmentation.parse("demo:intent"),
        start=end - timedelta(days=30),
        end=end,
        comparison="control",
    )
    assert not result["empty"], result.get("message")
    lift = {s["name"]: s["conversion"]["absolute_lift"]["value"] for s in result["report"]["segments"]}
    planted = demo.planted_direction("signup-popup", "ten-off")
    assert {+1, -1} <= set(planted.values()), "the demo plants both directions"
    for intent, direction in planted.items():
        assert lift[intent] * direction > 0, f"{intent}: planted {direction:+d}, measured {lift[intent]:+.4f}"
    # and the report says the segments differ
    assert result["report"]["conversion_heterogeneity"]["p_value"] < 0.01
