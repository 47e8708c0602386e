"""Lookalikes on the demo: precision against the planted intents, the quality estimate, exclusions."""

from datetime import timedelta

import pytest

from personalization.models import Profile, ProfileIdentity
from personalization.people import selectors as people
from segments import services
from segments.models import Segment, SegmentKind, SegmentMembership
from segments.services.lookalikes import Seed
from tests import factories
from tests.segments.conftest import DEMO_END

INTENT = "trail_runner"


def _intent_converters(project) -> list[int]:
    """People of one planted intent who added to cart: a seed a marketer could upload as ids."""
    converters = people.profiles_converters(
        project_id=project.pk, goal="add_to_cart", start=DEMO_END - timedelta(days=14), end=DEMO_END
    )
    truth = people.profiles_planted_intent(project_id=project.pk, profile_ids=converters)
    return sorted(pid for pid in converters if truth.get(pid) == INTENT)


def _ids_text(profile_ids: list[int]) -> str:
    rows = ProfileIdentity.objects.filter(profile_id__in=profile_ids, kind="anon").values_list("value", flat=True)
    return "\n".join(rows)


def test_lookalike__of_one_intents_converters__is_mostly_that_intent_and_estimate_is_close(refitted):
    seed_ids = _intent_converters(refitted)
    seed = services.seed_from_ids(project_id=refitted.pk, text=_ids_text(seed_ids))
    assert set(seed.weights) == set(seed_ids)
    preview = services.lookalike_preview(project_id=refitted.pk, seed=seed)
    point = next(p for p in preview["curve"] if p["share"] == 0.05)
    segment = services.lookalike_build(project=refitted, seed=seed, size=point["size"], name="Trail lookalike")
    members = list(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))
    truth = people.profiles_planted_intent(project_id=refitted.pk, profile_ids=members)
    precision = sum(truth.get(pid) == INTENT for pid in members) / len(members)
    low, high = point["precision_interval"]
    print(
        f"\nlookalike of {len(seed_ids)} {INTENT} converters: size {len(members)}, precision {precision:.3f},"
        f" estimated {point['precision']:.3f} [{low:.3f}, {high:.3f}], recall@5% {point['recall']:.3f},"
        f" lift {point['lift']:.1f}x"
    )
    assert precision >= 0.8
    assert low <= precision <= high, "the range shown holds the measured precision"
    # 0.43 measured once the demo's intents got session behavior (issue 18: researchers and trainers
    # compare within one category, which blurs their behavior into trail runners'); 0.38 before it.
    assert high - low <= 0.45, "and is narrow enough to act on"
    assert point["lift"] > 3
    assert not set(members) & set(seed_ids), "the seed itself is never in its lookalike"
    wider = next(p for p in preview["curve"] if p["share"] == 0.15)
    big = services.lookalike_build(project=refitted, seed=seed, size=wider["size"], name="Wider")
    big_members = list(SegmentMembership.objects.filter(segment=big).values_list("profile_id", flat=True))
    truth = people.profiles_planted_intent(project_id=refitted.pk, profile_ids=big_members)
    wide_precision = sum(truth.get(pid) == INTENT for pid in big_members) / len(big_members)
    low, high = wider["precision_interval"]
    print(
        f"at 15 %: size {len(big_members)}, precision {wide_precision:.3f}, estimated {wider['precision']:.3f}"
        f" [{low:.3f}, {high:.3f}]"
    )
    assert low <= wide_precision <= high, "the range shown holds the measured precision"
    assert segment.kind == SegmentKind.LOOKALIKE and segment.size == len(members)
    assert any(b["weight"] > 0 and "trail" in b["feature"] for b in preview["influential"])
    assert any(b["weight"] < 0 for b in preview["influential"]), "signed: behaviors the seed does less"


def test_lookalike_page__preview__shows_ranges_and_says_what_they_mean(refitted, client):
    client.force_login(factories.member_make(project=refitted, role="marketer"))
    text = _ids_text(_intent_converters(refitted))
    answer = client.post("/segments/lookalikes/new", {"seed_source": "ids", "seed_ids": text, "action": "preview"})
    assert answer.status_code == 200
    html = answer.content.decode()
    preview = services.lookalike_preview(
        project_id=refitted.pk, seed=services.seed_from_ids(project_id=refitted.pk, text=text)
    )
    shown = [p for p in preview["curve"] if p["precision"] is not None]
    assert shown and preview["precision_meaning"] in html
    assert "the data cannot tell more precisely" in html
    assert html.count('the data cannot tell more precisely">') == len(shown), "each range says so on hover"


def test_lookalike__opted_out_people__never_in_it(refitted):
    seed_ids = _intent_converters(refitted)
    seed = Seed(dict.fromkeys(seed_ids, 1.0), {"kind": "test"})
    first = services.lookalike_build(project=refitted, seed=seed, size=300, name="First")
    members = list(SegmentMembership.objects.filter(segment=first).values_list("profile_id", flat=True))
    opted_out = members[:50]
    Profile.objects.filter(pk__in=opted_out[:25]).update(do_not_personalize=True)
    Profile.objects.filter(pk__in=opted_out[25:]).update(consent={"personalization": False})
    second = services.lookalike_build(project=refitted, seed=seed, size=300, name="Second")
    again = set(SegmentMembership.objects.filter(segment=second).values_list("profile_id", flat=True))
    assert len(again) == 300 and not again & set(opted_out)
    preview = services.lookalike_preview(project_id=refitted.pk, seed=seed)
    assert preview["population"] <= 3000 - len(opted_out)


def test_lookalike__small_seed__warns(refitted):
    seed = Seed(dict.fromkeys(_intent_converters(refitted)[:30], 1.0), {"kind": "test"})
    preview = services.lookalike_preview(project_id=refitted.pk, seed=seed)
    assert any("under 100" in w for w in preview["warnings"])


def test_lookalike__unknown_ids_and_bad_input__named(refitted):
    seed = services.seed_from_ids(project_id=refitted.pk, text="nobody-1, nobody-2")
    assert seed.missing == ["nobody-1", "nobody-2"]
    with pytest.raises(services.SegmentsError) as err:
        services.lookalike_preview(project_id=refitted.pk, seed=seed)
    assert err.value.field == "seed"
    with pytest.raises(services.SegmentsError) as err:
        services.seed_from_ids(project_id=refitted.pk, text="  ")
    assert err.value.field == "seed_ids"
    ok = Seed({1: 1.0}, {})
    with pytest.raises(services.SegmentsError) as err:
        services.lookalike_build(project=refitted, seed=ok, size=0, name="x")
    assert err.value.field == "size"


def test_lookalike_build__through_the_task__reports_progress_and_the_page_shows_it_then_the_lookalike(
    refitted, client, django_capture_on_commit_callbacks
):
    from segments.models import LookalikeBuild, RunStatus
    from segments.tasks import lookalike_build_task

    client.force_login(factories.member_make(project=refitted, role="marketer"))
    form = {"seed_source": "ids", "seed_ids": _ids_text(_intent_converters(refitted)), "action": "build"}
    with django_capture_on_commit_callbacks(execute=False) as queued:
        answer = client.post("/segments/lookalikes/new", {**form, "size": "200", "name": "Trail via worker"})
    build = LookalikeBuild.objects.get(name="Trail via worker")
    assert answer.status_code == 302 and answer["Location"] == f"/segments/lookalikes/builds/{build.pk}/"
    assert len(queued) == 1 and build.status == RunStatus.QUEUED and build.seed_weights
    waiting = client.get(answer["Location"]).content.decode()
    assert 'role="progressbar"' in waiting and "Waiting for a worker" in waiting
    assert not Segment.objects.filter(kind=SegmentKind.LOOKALIKE, name="Trail via worker").exists()

    labels = []
    original = LookalikeBuild.objects.filter

    def recording_filter(*args, **kwargs):
        # Each write of the build goes through filter(); reading the row there sees the previous step, so
        # every step the worker wrote is read back from the database by the next write.
        result = original(*args, **kwargs)
        labels.append(LookalikeBuild.objects.values_list("progress", flat=True).get(pk=build.pk))
        return result

    LookalikeBuild.objects.filter = recording_filter
    try:
        assert lookalike_build_task.run(build.pk) == RunStatus.DONE
    finally:
        del LookalikeBuild.objects.filter
    assert {10, 40, 60, 85} <= set(labels), labels
    build.refresh_from_db()
    assert build.progress == 100 and build.seed_weights == {} and build.segment is not None
    assert build.segment.size == SegmentMembership.objects.filter(segment=build.segment).count() == 200
    polled = client.get(f"/segments/lookalikes/builds/{build.pk}/", HTTP_HX_REQUEST="true")
    assert polled["HX-Refresh"] == "true"
    page = client.get(f"/segments/lookalikes/builds/{build.pk}/").content.decode()
    assert "Lookalike “Trail via worker” saved with 200 people" in page and build.segment.key in page
    assert lookalike_build_task.run(build.pk) == RunStatus.DONE, "a duplicate delivery changes nothing"
    assert Segment.objects.filter(name="Trail via worker").count() == 1


def test_lookalike_build__bad_name_refused_before_queueing__a_seed_that_fails_says_why(refitted, client):
    from segments.models import LookalikeBuild, RunStatus

    with pytest.raises(services.SegmentsError) as err:
        services.lookalike_build_request(project=refitted, seed=Seed({1: 1.0}, {}), size=10, name=" ")
    assert err.value.field == "name" and not LookalikeBuild.objects.exists()
    nobody = Seed({10**9: 1.0}, {"kind": "test"})  # an id with no vector: found out by the worker
    build = services.lookalike_build_request(project=refitted, seed=nobody, size=10, name="Nobody")
    build = services.lookalike_build_execute(build_id=build.pk)
    assert build.status == RunStatus.FAILED and build.error.startswith("seed: ") and build.seed_weights == {}
