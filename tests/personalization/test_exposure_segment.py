"""Every exposure records the unit's segment, whatever its arm (engine.unit_segment), so a lift
breakdown by segment at exposure compares like with like and its sample ratio holds."""

import math
from datetime import timedelta

import pytest
from django.db.models import Count, Q

from experiments import services as experiments_services
from experiments.breakdown import Breakdown
from personalization import services
from personalization.decide import engine
from personalization.models import Exposure
from tests.factories import engine_snapshot
from tests.personalization.test_decide import drain_all, make_experience, post_decide

SEGMENTS = ("trail", "road", "gift")


def test_unit_segment__every_arm__the_same_value():
    snapshot, exp = engine_snapshot()
    arms = set()
    for n in range(200):
        decision = engine.decide_unit(snapshot, f"u{n}", {}, {"attributes": {"intent": "trail"}})
        (exposure,) = decision.exposures
        arms.add(exposure["arm"])
        assert exposure["segment"] == "trail", exposure
    assert arms == {"variant", "holdout_global", "holdout_experience"}
    assert engine.unit_segment(exp, {"attr:intent": "0"}, {}) == "0"  # a falsy value is still a segment
    assert engine.unit_segment({**exp, "segment_field": ""}, {"attr:intent": "x"}, {}) == ""


@pytest.mark.django_db
def test_decide__holdout_share_per_segment__within_sampling_error(client, project, public_key):
    services.project_holdout_set(project=project, share=0.1)
    make_experience(project, policy="segment_bandit", segment_attribute="intent", holdout_share=0.2)
    services.snapshot_publish(project_id=project.pk)
    n = 3000
    for i in range(n):
        status, _ = post_decide(
            client, public_key, {"anonymous_id": f"v{i}", "context": {"attributes": {"intent": SEGMENTS[i % 3]}}}
        )
        assert status == 200
    drain_all()
    rows = (
        Exposure.objects.filter(project=project, experience_key="hero")
        .values("segment")
        .annotate(
            total=Count("id"),
            global_held=Count("id", filter=Q(arm="holdout_global")),
            experience_held=Count("id", filter=Q(arm="holdout_experience")),
        )
    )
    by_segment = {row["segment"]: row for row in rows}
    assert set(by_segment) == set(SEGMENTS)  # no "" segment: holdouts carry theirs too
    for segment, row in by_segment.items():
        total = row["total"]
        assert total == n // 3
        # Global holdout 10 %; the experience holdout takes 20 % of the rest.
        for held, share in ((row["global_held"], 0.1), (row["experience_held"], 0.9 * 0.2)):
            sigma = math.sqrt(share * (1 - share) / total)
            assert abs(held / total - share) < 4 * sigma, (segment, held, total, share)

    # …so the default breakdown's sample ratio check passes in every segment.
    result = experiments_services.lift_compute(
        project=project,
        experience_key="hero",
        breakdown=Breakdown.parse("exposure:segment"),
        start=Exposure.objects.earliest("exposed_at").exposed_at,
        end=Exposure.objects.latest("exposed_at").exposed_at + timedelta(seconds=1),
    )
    report = result["report"]
    assert {s["name"] for s in report["segments"]} == set(SEGMENTS)
    assert not any(s["sample_ratio"]["mismatch"] for s in [report["overall"], *report["segments"]])
