"""Predictive scores on the demo shop: retrained, judged on held-out people before promotion, stored,
handed to decide, and never kept for someone who may not be profiled."""

import pytest

from personalization import redis_client, rkeys
from personalization import services as personalization_services
from personalization.models import ProfileIdentity
from personalization.score_fields import UNIT_SCORES_FIELD, scores_parse
from segments import services
from segments.models import ProfileScore, RunStatus, ScoreRun
from tests import factories
from tests.seeded import demo_seed_cached, state_cached
from tests.segments.conftest import DEMO_END


@pytest.fixture
def scored(db, tmp_path):
    """The demo shop of tests/segments/conftest.py (3,000 visitors) with one retrain done: each test that
    starts from a retrained demo gets it replayed (tests/seeded.py) instead of training again (~15 s)."""

    def build() -> tuple[int, int]:
        demo = demo_seed_cached(profiles=3000, days=14, seed=11, keys_path=tmp_path / "keys.json", end=DEMO_END)
        return demo.pk, _run(demo).pk

    def reload(pks: tuple[int, int]):
        run = ScoreRun.objects.get(pk=pks[1])
        return run.project, run

    return state_cached(("demo-scored", 3000, 14, 11, DEMO_END), build, reload)


def _run(project, **kwargs):
    run = services.score_run_request(project=project, **kwargs)
    return services.score_run_execute(run_id=run.pk)


def _field(project, profile_id: int) -> str | None:
    unit = ProfileIdentity.objects.filter(profile_id=profile_id).values_list("value", flat=True).first()
    raw = redis_client.worker().hget(rkeys.unit(project.pk, unit), UNIT_SCORES_FIELD)
    return raw.decode() if raw is not None else None


def test_scores__demo__beat_random_on_held_out_people_and_reach_decide(scored):
    demo_project, run = scored
    assert run.status == RunStatus.DONE, run.error
    buy, lapse, revenue = (run.results[k] for k in ("likely_to_buy", "lapse_risk", "expected_revenue"))
    for name, result in (("likely_to_buy", buy), ("lapse_risk", lapse)):
        f = result["figures"]
        print(
            f"{name}: horizon {result['horizon_days']} d, holdout AUC {f['auc']:.3f} "
            f"[{f['auc_interval'][0]:.3f}, {f['auc_interval'][1]:.3f}], Brier {f['brier']:.4f} "
            f"(base rate {f['brier_base_rate']:.4f}), top-decile lift {f['top_decile_lift']:.2f} "
            f"[{f['top_decile_lift_interval'][0]:.2f}, {f['top_decile_lift_interval'][1]:.2f}], "
            f"{f['positives']}/{f['people']} positive -> {result['reason']}"
        )
    f = revenue["figures"]
    print(
        f"expected_revenue: horizon {revenue['horizon_days']} d, top-decile share {f['top_decile_share']:.2f} "
        f"[{f['top_decile_share_interval'][0]:.2f}, {f['top_decile_share_interval'][1]:.2f}], "
        f"Spearman {f['spearman']:.3f} -> {revenue['reason']}"
    )
    # 14 days of history: the 30-day lapse horizon is cut to half of it, and the page says why.
    assert lapse["horizon_days"] < 7 and "the history spans" in lapse["note"]
    # Lapse risk: who keeps coming back is written in the demo's visit rates, and the model finds it.
    f = lapse["figures"]
    assert lapse["promoted"], lapse["reason"]
    assert f["auc_interval"][0] > 0.55
    assert f["brier"] < f["brier_base_rate"]
    assert f["top_decile_lift_interval"][0] > 1.3
    # Likely to buy: the demo's repeat buyers (demo/world.py REPEAT_BUYER_SHARE) come back and buy
    # again, so past visits and purchases predict the next ones and the model beats random on held-out people.
    f = buy["figures"]
    assert f["positives"] >= 50, "enough buyers to judge"
    assert buy["promoted"], buy["reason"]
    assert f["auc_interval"][0] > 0.55
    assert f["brier"] < f["brier_base_rate"]
    assert f["top_decile_lift_interval"][0] > 1.3
    # Counts in the answer are the database's; a scored person's field reads back as their row.
    rows = ProfileScore.objects.filter(project=demo_project)
    assert run.scored == rows.count() > 1000
    assert not rows.filter(lapse_risk__isnull=True).exists()
    row = rows.order_by("-lapse_risk").first()
    facts = scores_parse(_field(demo_project, row.profile_id))
    assert facts["lapse_risk"] == pytest.approx(row.lapse_risk, rel=1e-3)
    assert facts["lapse_risk.top_percent"] < 1


def test_scores__placebo_run_on_shuffled_labels__is_refused_and_the_model_in_use_stays(scored, client):
    demo_project, first = scored
    assert first.results["lapse_risk"]["promoted"] and first.results["likely_to_buy"]["promoted"]
    placebo = _run(demo_project, placebo=True)
    for name in ("lapse_risk", "likely_to_buy"):
        reason = placebo.results[name]["reason"]
        assert not placebo.results[name]["promoted"]
        assert reason.startswith("kept out:"), reason
        assert "not above random" in reason or "worse beyond noise" in reason, reason
    result = placebo.results["lapse_risk"]
    in_use = services.score_models_in_use(project_id=demo_project.pk)
    assert in_use["lapse_risk"][0] == in_use["likely_to_buy"][0] == first.pk
    # Everyone is still scored, with the model in use.
    assert ProfileScore.objects.filter(project=demo_project, run_id=placebo.pk).count() == placebo.scored > 1000
    # The page says why, beside the figures and the plot.
    client.force_login(factories.member_make(project=demo_project, role="marketer"))
    page = client.get("/segments/scores/").content.decode()
    assert result["reason"].replace("'", "&#x27;") in page
    assert f"model in use: retrain #{first.pk}" in page
    assert 'id="calibration-json"' in page and "lapse_risk: observed" in page


def test_scores_page__no_retrain_yet__explains_and_bad_input_is_named(project, client):
    client.force_login(factories.member_make(project=project, role="marketer"))
    page = client.get("/segments/scores/").content.decode()
    assert 'id="scores-empty"' in page and "No scores yet" in page
    response = client.post("/segments/scores/start", {"goal": "purchase", "lapse_risk": "many"}, follow=True)
    assert "lapse_risk: give a whole number of days from 1 to 365" in response.content.decode()
    assert not ScoreRun.objects.filter(project=project).exists()


def test_scores__opted_out_person__loses_scores_and_is_never_scored_again(scored, django_capture_on_commit_callbacks):
    demo_project, _ = scored
    row = ProfileScore.objects.filter(project=demo_project).order_by("profile_id").first()
    assert _field(demo_project, row.profile_id) is not None
    with django_capture_on_commit_callbacks(execute=True):
        personalization_services.profiles_personalization_set(
            project_id=demo_project.pk, profile_ids=[row.profile_id], do_not_personalize=True
        )
    assert not ProfileScore.objects.filter(profile_id=row.profile_id).exists()
    assert _field(demo_project, row.profile_id) is None
    _run(demo_project)
    assert not ProfileScore.objects.filter(profile_id=row.profile_id).exists()
    assert _field(demo_project, row.profile_id) is None


def test_score_run_request__bad_horizon__names_the_field_and_the_fix(project):
    # Checked before anything is read: an empty project says it as the demo would, and nothing is queued.
    with pytest.raises(services.SegmentsError) as caught:
        services.score_run_request(project=project, horizons={"lapse_risk": 0})
    assert caught.value.field == "lapse_risk"
    assert "from 1 to 365" in caught.value.message
    assert not ScoreRun.objects.filter(project=project).exists()
