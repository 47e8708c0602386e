"""Predictive scores in targeting: conditions on likely_to_buy / lapse_risk and "top X%", checked when
the experience is saved and evaluated by decide from the unit hash it already reads."""

import pytest

from personalization import redis_client, rkeys, services
from personalization.decide import runtime as decide_runtime
from personalization.models import Exposure
from personalization.score_fields import UNIT_SCORES_FIELD, scores_pack
from tests import factories


def _experience(project, key: str, conditions: str) -> None:
    factories.targeted_experience_start(project=project, key=key, conditions=conditions)


def _scores(project, unit: str, buy: tuple[float, float], lapse: tuple[float, float]) -> None:
    field = scores_pack({"likely_to_buy": buy, "lapse_risk": lapse})
    redis_client.worker().hset(rkeys.unit(project.pk, unit), UNIT_SCORES_FIELD, field)


@pytest.mark.django_db
def test_decide__score_conditions__match_from_the_unit_hash(project):
    services.project_holdout_set(project=project, share=0)
    _experience(project, "vip", "likely_to_buy >= 0.8")
    _experience(project, "top-buyers", "likely_to_buy top 10%")
    _experience(project, "win-back", "lapse_risk >= 0.5")
    services.snapshot_publish(project_id=project.pk)
    _scores(project, "keen", buy=(0.91, 3.0), lapse=(0.1, 90.0))
    _scores(project, "drifting", buy=(0.2, 60.0), lapse=(0.7, 5.0))

    def reasons(unit: str) -> dict:
        answer = decide_runtime.decide(project.pk, {"anonymous_id": unit})
        return {key: a["reason"] for key, a in answer["assignments"].items()}

    assert reasons("keen") == {"vip": "fixed_split", "top-buyers": "fixed_split", "win-back": "targeting_miss"}
    assert reasons("drifting") == {"vip": "targeting_miss", "top-buyers": "targeting_miss", "win-back": "fixed_split"}
    # Not scored: every comparison on a score is false.
    assert set(reasons("stranger").values()) == {"targeting_miss"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ("likely_to_buy >= 80", "likely_to_buy is a chance from 0 to 1; write e.g. likely_to_buy >= 0.8"),
        ("device top 10%", '"top" goes after a score: likely_to_buy, expected_revenue, lapse_risk'),
        ("lapse_risk top 0%", "expected a percent above 0 and at most 100 after top"),
    ],
)
def test_experience_save__bad_score_condition__refused_naming_the_condition(project, conditions, message):
    with pytest.raises(services.ExperienceError) as caught:
        _experience(project, "bad", conditions)
    assert caught.value.field == "targeting.conditions"
    assert message in caught.value.message


@pytest.mark.django_db
def test_decide__scored_visitor__exposure_keeps_the_scores_for_cupac(project):
    """Decide records the scores it read with each exposure, in every arm: the lift report's CUPAC
    covariate, frozen before the variant was shown. Someone not scored keeps no "scores"."""
    services.project_holdout_set(project=project, share=0)
    _experience(project, "hero", "")
    services.snapshot_publish(project_id=project.pk)
    _scores(project, "keen", buy=(0.9123, 3.0), lapse=(0.1, 90.0))

    for unit in ("keen", "stranger"):
        decide_runtime.decide(project.pk, {"anonymous_id": unit})
    decide_runtime.buffer.flush()  # decide's write-behind: exposures go to the events stream
    services.events_drain(claim_idle_ms=0)

    recorded = {x.profile.identities.get().value: x.live for x in Exposure.objects.filter(project=project)}
    assert recorded["keen"]["scores"] == {"likely_to_buy": 0.9123, "lapse_risk": 0.1}
    assert recorded["stranger"] is not None and "scores" not in recorded["stranger"]
