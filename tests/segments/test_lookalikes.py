"""Lookalikes on the demo: precision against the planted intents, the quality estimate, exclusions."""

from datetime import timedelta

import pytest

from personalization.models import Profile, ProfileIdentity
from personalization.people import selectors as people
from segments import services
from segments.models import SegmentKind, SegmentMembership
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
