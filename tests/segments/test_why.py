"""Why a person is in each segment, intent and score band: the reads (segments/why.py) on a small demo,
the visitor page's Why panel, and the privacy export carrying the same explanations."""

import io
import zipfile
from datetime import timedelta

import numpy as np
import orjson
import pytest
from django.core.management import call_command

from demo import seed as demo_services
from personalization import selectors as people
from personalization import services as personalization_services
from personalization.models import ProfileIdentity
from privacy import services as privacy_services
from segments import explain, scoring, services, why
from segments.models import (
    ProfileIntent,
    ProfileScore,
    RunStatus,
    ScoreRun,
    Segment,
    SegmentKind,
    SegmentMembership,
)
from tests import factories
from tests.segments.conftest import DEMO_END

TRAIL = {
    "name": "trail running",
    "examples": ["trail shoes", "grippy soles for muddy mountain paths", "hydration vest for ultras"],
}


def _lapse_model_in_use(project) -> None:
    """A lapse-risk model fitted on the demo and everyone scored with it, as a retrain that promoted it
    leaves them. Written here, not by score_run_execute: its judging (bootstrap intervals on five folds)
    takes ~55 s on these 300 people, and what is tested here is the explanation of a model in use."""
    clock = people.behavior_clock(project_id=project.pk)
    table = scoring.event_table(
        people.profiles_behavior(project_id=project.pk, since=clock - timedelta(days=scoring.LOOKBACK_DAYS))
    )
    cutoff = clock.timestamp() - 7 * scoring.DAY
    spec = scoring.feature_spec(table, goal="purchase", before=cutoff)
    X, present = scoring.features_at(table, cutoff=cutoff, spec=spec)
    y = scoring.labels_after(table, cutoff=cutoff, horizon_days=7, goal="purchase")["lapse_risk"]
    model = scoring.model_fit("lapse_risk", X[present], y[present], spec=spec, horizon_days=7)
    run = ScoreRun.objects.create(
        project=project, status=RunStatus.DONE, clock=clock, results={"lapse_risk": {"promoted": True, "model": model}}
    )
    X, present = scoring.features_at(table, cutoff=clock.timestamp(), spec=spec)
    values = scoring.model_predict(model, X[present])
    tops = scoring.top_percent(values)
    ProfileScore.objects.bulk_create(
        ProfileScore(
            project=project,
            profile_id=int(pid),
            lapse_risk=float(v),
            lapse_risk_top=float(t),
            run_id=run.pk,
            scored_at=clock,
        )
        for pid, v, t in zip(table.profiles[present], values, tops, strict=True)
    )


@pytest.fixture(scope="module")
def explained_module(django_db_setup, django_db_blocker, tmp_path_factory):
    """A 300-person demo (28 days) with behavior segments, an intent and predictive scores, committed once
    for the module: its tests only read it."""
    keys = tmp_path_factory.mktemp("demo") / "keys.json"
    with django_db_blocker.unblock():
        project = demo_services.demo_seed(profiles=300, days=28, seed=5, keys_path=keys, end=DEMO_END)
        services.embeddings_refit(project_id=project.pk, now=DEMO_END)
        run = services.clustering_run_request(project=project, k=4)
        services.clustering_run_execute(run_id=run.pk)
        services.intent_create(project_id=project.pk, **TRAIL)
        services.intents_rescore(project_id=project.pk)
        _lapse_model_in_use(project)
    yield project
    with django_db_blocker.unblock():
        demo_services.demo_delete()
        # Then emptied as after a transactional test: users, and caches no project owns (text vectors), which
        # made every later test asking for a cached state build it for real (HASROWS: ~10 s each).
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def explained(explained_module, db):
    return type(explained_module).objects.get(pk=explained_module.pk)


def _unit(profile_id: int) -> str:
    return ProfileIdentity.objects.filter(profile_id=profile_id).values_list("value", flat=True).first()


def _trail_runner(project) -> ProfileIntent:
    """The person scoring highest on the intent who is also in a behavior segment and scored."""
    scored = set(ProfileScore.objects.filter(project=project).values_list("profile_id", flat=True))
    members = set(
        SegmentMembership.objects.filter(segment__project=project, segment__kind=SegmentKind.BEHAVIOR).values_list(
            "profile_id", flat=True
        )
    )
    rows = ProfileIntent.objects.filter(project=project, profile_id__in=scored & members).order_by("-score")
    return rows.select_related("intent").first()


def test_why__a_trail_runner__segment_intent_and_score_explained_from_their_own_data(explained):
    row = _trail_runner(explained)
    assert row is not None and row.score >= row.intent.threshold and row.phrases
    found = why.unit_explanations(project_id=explained.pk, unit_id=_unit(row.profile_id))
    kinds = {item["kind"] for item in found["items"]}
    assert kinds == {"segment", "intent", "score"}
    assert found["summary"], "what they did, in one line"

    # Segment: every behavior named is on the segment's card, and the person's count is their own.
    membership = SegmentMembership.objects.get(profile_id=row.profile_id, segment__kind=SegmentKind.BEHAVIOR)
    segment = Segment.objects.get(pk=membership.segment_id)
    item = next(i for i in found["items"] if i["kind"] == "segment")
    assert item["key"] == segment.key and item["why"].startswith(f"In “{segment.name}”")
    card_phrases = {explain.label_phrase(f["feature"]) for f in segment.card["over_index"] + segment.card["more"]}
    assert all(reason.rsplit(" (", 1)[0] in card_phrases for reason in item["reasons"])

    # Intent: the stored phrases, and an example of the intent as the nearest.
    item = next(i for i in found["items"] if i["kind"] == "intent")
    assert item["reasons"] == row.phrases and f"“{row.phrases[0]}”" in item["why"]
    assert any(f"nearest example phrase of the intent: “{e}”" in item["why"] for e in TRAIL["examples"])

    # Score: the contributions rebuild the stored score exactly (the model is linear on its features).
    stored = ProfileScore.objects.get(profile_id=row.profile_id)
    run = ScoreRun.objects.get(pk=stored.run_id)
    models = services.score_models_in_use(project_id=explained.pk)
    for item in (i for i in found["items"] if i["kind"] == "score"):
        name = item["key"]
        model = models[name][1]
        events = [
            e
            for pid, rows in people.profiles_behavior(
                project_id=explained.pk,
                since=run.clock - timedelta(days=scoring.LOOKBACK_DAYS),
                profile_ids=[row.profile_id],
            )
            for e in rows
            if e[1] < run.clock
        ]
        X, _ = scoring.features_at(
            scoring.event_table([(row.profile_id, events)]), cutoff=run.clock.timestamp(), spec=model["spec"]
        )
        parts = explain.score_contributions(model, X[0])
        link = sum(p for _, _, p in parts) + model["intercept"]
        predicted = np.exp(link) if model["kind"] == "poisson" else 1 / (1 + np.exp(-link))
        assert predicted == pytest.approx(getattr(stored, name), rel=1e-6)
        assert item["band"] == explain.band(getattr(stored, f"{name}_top"))


def test_why__unknown_id_and_opted_out_person__nothing_to_explain(explained):
    assert why.unit_explanations(project_id=explained.pk, unit_id="nobody-here") == {"summary": "", "items": []}
    row = _trail_runner(explained)
    personalization_services.profiles_personalization_set(
        project_id=explained.pk, profile_ids=[row.profile_id], do_not_personalize=True
    )
    assert why.unit_explanations(project_id=explained.pk, unit_id=_unit(row.profile_id))["items"] == []


def test_visitor_page__why_panel_lists_the_explanations_and_an_empty_state(explained, client):
    client.force_login(factories.member_make(project=explained, role="developer"))
    row = _trail_runner(explained)
    page = client.get("/visitors/", {"id": _unit(row.profile_id)}).content.decode()
    assert 'id="visitor-why"' in page and "why-segment" in page and "why-intent" in page and "why-score" in page
    assert row.phrases[0] in page
    empty = client.get("/visitors/", {"id": "nobody-here"}).content.decode()
    assert "Nothing to explain for “nobody-here”" in empty


def test_export__holds_the_same_explanations(explained):
    row = _trail_runner(explained)
    unit = _unit(row.profile_id)
    expected = why.unit_explanations(project_id=explained.pk, unit_id=unit)
    request = factories.privacy_request_make(project=explained, kind="access", anonymous_id=unit)
    path = privacy_services.subject_export(request=request)
    with zipfile.ZipFile(path) as archive:
        data = orjson.loads(archive.read("data.json"))
        summary = archive.read("summary.txt").decode()
        csv_text = io.TextIOWrapper(archive.open("profiling_explanations.csv"), encoding="utf-8").read()
    rows = data["locations"]["profiling_explanations"]
    assert rows[0] == {
        "kind": "behavior",
        "key": "",
        "name": "what the explanations rest on",
        "why": expected["summary"],
    }
    assert [r["why"] for r in rows[1:]] == [i["why"] for i in expected["items"]]
    assert all(i["why"] in summary for i in expected["items"])
    assert expected["items"][0]["why"].split("”")[0] in csv_text
