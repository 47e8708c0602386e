import json
import os
import stat
import threading
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from demo import seed as demo_services
from demo import world as demo
from demo.management.commands.demo_traffic import Traffic
from personalization import redis_client, rkeys, services
from personalization.decide import engine
from personalization.ingest.schema import batch_validate
from personalization.models import Event, Experience, Exposure, Membership, Profile, ProfileIdentity
from personalization.workspace import auth
from segments.models import ClusteringRun

END = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _arms_by_hash(global_share: float = 0.1):
    """Arms as the seed assigns them, with made-up salts."""

    def arms(profile):
        shown = {}
        for spec in demo.EXPERIENCES:
            weights = [v.weight for v in spec.variants]
            _, index = demo.history_arm(
                unit=profile.anonymous_id,
                project_salt="project-salt",
                global_holdout_share=global_share,
                experience_salt=f"salt-{spec.key}",
                holdout_share=spec.holdout_share,
                weights=[w / sum(weights) for w in weights],
            )
            shown[spec.key] = spec.control.key if index is None else spec.variants[index].key
        return shown

    return arms


@pytest.fixture(scope="module")
def population():
    return demo.profiles_generate(20_000, seed=7)


@pytest.fixture(scope="module")
def history():
    profiles = demo.profiles_generate(4_000, seed=3)
    starts = {spec.key: END - timedelta(days=spec.started_days_ago) for spec in demo.EXPERIENCES}
    return list(demo.history_generate(profiles, end=END, days=14, seed=3, arms=_arms_by_hash(), starts=starts))


# -- the pure generator ---------------------------------------------------------------------------


def test_profiles__intent_mix__matches_planted_shares(population):
    counts = Counter(p.intent for p in population)
    assert set(counts) == set(demo.INTENTS) and len(demo.INTENTS) >= 8
    for intent, share in demo.intent_mix().items():
        assert counts[intent] / len(population) == pytest.approx(share, abs=0.01), intent


def test_profiles__attributes__a_third_known_and_stated_intent_mostly_right(population):
    with_user = [p for p in population if p.user_id]
    assert len(with_user) / len(population) == pytest.approx(1 / 3, abs=0.02)
    assert all(p.user_id == f"u{p.n}" and p.anonymous_id == f"d{p.n}" for p in with_user)
    assert {p.attributes["plan"] for p in population if not p.user_id} == {"guest"}
    agree = sum(p.attributes["intent"] == p.intent for p in population) / len(population)
    expected = demo.STATED_INTENT_ACCURACY + (1 - demo.STATED_INTENT_ACCURACY) / len(demo.INTENTS)
    assert agree == pytest.approx(expected, abs=0.01)
    assert {"device", "channel", "plan", "intent"} <= set(population[0].attributes)


def test_profiles__same_seed__same_population():
    first, again = demo.profiles_generate(300, seed=5), demo.profiles_generate(300, seed=5)
    assert [(p.intent, p.user_id, p.attributes) for p in first] == [(p.intent, p.user_id, p.attributes) for p in again]
    assert [p.intent for p in demo.profiles_generate(300, seed=6)] != [p.intent for p in first]


def test_history__visit_conversion__between_2_and_4_percent(history):
    purchases = sum(s.events[-1]["type"] == "purchase" for s in history)
    expected = sum(demo.conversion_probability(s.profile.intent, s.shown) for s in history) / len(history)
    assert 0.02 <= expected <= 0.04
    assert 0.02 <= purchases / len(history) <= 0.04


def test_history__intents__behave_differently(history):
    dwell, depth = {}, {}
    for session in history:
        for event in session.events:
            if event["type"] == "page_view":
                dwell.setdefault(session.profile.intent, []).append(event["properties"]["dwell_ms"])
            if event["type"] == "scroll":
                depth.setdefault(session.profile.intent, []).append(event["properties"]["depth"])
    median = {intent: sorted(values)[len(values) // 2] for intent, values in dwell.items()}
    assert median["gear_researcher"] > 2 * median["bargain_hunter"]
    trail_categories = Counter(
        e["properties"].get("category") for s in history if s.profile.intent == "trail_runner" for e in s.events
    )
    assert trail_categories.most_common(2)[1][0] == "trail-shoes"  # after None (home, search, checkout pages)


def test_history__events__are_valid_api_events_in_time_order(history):
    for session in history[:300]:
        events = [demo.api_event(e, anonymous_id=session.profile.anonymous_id, user_id=None) for e in session.events]
        result = batch_validate({"events": events}, now=END + timedelta(minutes=5))
        assert result.rejected == [] and result.dropped_noise == 0
        stamps = [e["ts"] for e in session.events]
        assert stamps == sorted(stamps) and stamps[0] == session.start
    purchases = [e for s in history for e in s.events if e["type"] == "purchase"]
    assert all(p["value"] > 0 and p["value"] == p["properties"]["value"] for p in purchases)
    assert all(END - timedelta(days=14) <= s.start <= END for s in history)


def test_history__visits_before_an_experience_started__do_not_see_it(history):
    starts = {spec.key: END - timedelta(days=spec.started_days_ago) for spec in demo.EXPERIENCES}
    for session in history:
        assert set(session.shown) == {key for key, start in starts.items() if start <= session.start}


def test_conversion_probability__planted_responses__have_the_intended_sign():
    base = {intent: demo.conversion_probability(intent, {}) for intent in demo.INTENTS}

    def lift(intent, experience, variant):
        return demo.conversion_probability(intent, {experience: variant}) / base[intent] - 1

    assert lift("trail_runner", "homepage-hero", "trail") == pytest.approx(0.6)
    assert lift("bargain_hunter", "homepage-hero", "trail") == pytest.approx(-0.3)
    assert lift("bargain_hunter", "homepage-hero", "deals") > 0.5
    assert lift("gear_researcher", "homepage-hero", "deals") < -0.2
    assert lift("gift_buyer", "homepage-hero", "gifts") > 0.5
    assert lift("gear_researcher", "signup-popup", "ten-off") < 0 < lift("bargain_hunter", "signup-popup", "ten-off")
    for spec in demo.EXPERIENCES:
        assert demo.conversion_probability("trail_runner", {spec.key: spec.control.key}) == base["trail_runner"]
    # The per-segment experience has no single winner: its best variant depends on the intent.
    hero = demo.EXPERIENCE_BY_KEY["homepage-hero"]
    best = {max(hero.variants, key=lambda v, i=intent: v.response.get(i, 1.0)).key for intent in demo.INTENTS}
    assert len(best) >= 3


def test_conversion_probability__decide_answers_and_unknown_keys():
    answer = {"homepage-hero": {"variant": "trail", "payload": {}, "reason": "bandit", "version": 1}}
    assert demo.conversion_probability("trail_runner", answer) == pytest.approx(
        demo.conversion_probability("trail_runner", {"homepage-hero": "trail"})
    )
    plain = demo.conversion_probability("trail_runner", {})
    assert demo.conversion_probability("trail_runner", {"nope": "x", "homepage-hero": "unknown"}) == plain
    assert demo.conversion_probability("trail_runner", {"homepage-hero": {"variant": None}}) == plain


def test_experiences__every_policy_and_a_control_each():
    assert {spec.policy for spec in demo.EXPERIENCES} == {"fixed", "bandit", "segment_bandit"}
    for spec in demo.EXPERIENCES:
        assert sum(v.is_control for v in spec.variants) == 1
        assert set().union(*(v.response for v in spec.variants)) <= set(demo.INTENTS)
    segmented = [spec for spec in demo.EXPERIENCES if spec.policy == "segment_bandit"]
    assert [spec.segment_attribute for spec in segmented] == ["intent"]
    hero = demo.EXPERIENCE_BY_KEY["homepage-hero"]
    assert {"headline", "image", "cta"} <= set(hero.control.payload)


# -- the seed, on the database --------------------------------------------------------------------


@pytest.mark.django_db
def test_demo_seed__small_demo__everything_in_place(tmp_path, django_capture_on_commit_callbacks):
    keys_file = tmp_path / "keys.json"
    with django_capture_on_commit_callbacks(execute=True):
        project = demo_services.demo_seed(profiles=500, days=2, seed=7, keys_path=keys_file)

    profiles = Profile.objects.filter(project=project)
    assert profiles.count() == 500
    planted = list(profiles.values_list(f"attributes__{demo.PLANTED_ATTRIBUTE}", flat=True))
    assert planted and set(planted) <= set(demo.INTENTS)  # every profile has one, and only planted ones
    with_user = profiles.exclude(external_id=None).count()
    assert 0.2 < with_user / 500 < 0.47
    assert ProfileIdentity.objects.filter(project=project).count() == 500 + with_user
    assert ProfileIdentity.objects.filter(project=project, kind="anon", value="d0").exists()
    events = Event.objects.filter(project=project)
    assert events.values("profile_id").distinct().count() == 500
    assert events.count() > 500 * 4
    assert not profiles.filter(first_seen__gt=datetime.now(UTC)).exists()

    keys = json.loads(keys_file.read_text())
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
    assert auth.api_key_lookup(keys["public_key"]).kind == "public"
    assert auth.api_key_lookup(keys["secret_key"]).kind == "secret"
    assert (keys["profiles"], keys["seed"]) == (500, 7)
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"demo": "admin", "marketer": "marketer", "analyst": "analyst",
                     "compliance": "compliance", "developer": "developer"}  # fmt: skip
    assert get_user_model().objects.get(username="compliance").check_password("kairos-demo")

    experiences = Experience.objects.filter(project=project)
    assert {e.status for e in experiences} == {"running"}
    assert {e.policy for e in experiences} == {"fixed", "bandit", "segment_bandit"}
    assert all(e.started_at < datetime.now(UTC) - timedelta(days=1) for e in experiences)

    # Exposures: one per profile and experience seen, split by the same hashing as decide.
    exposures = Exposure.objects.filter(project=project)
    assert exposures.count() == 500 * len(demo.EXPERIENCES)  # 2 days: every visit is after every start
    snapshot = services.snapshot_compile(project_id=project.pk)
    anon = dict(ProfileIdentity.objects.filter(project=project, kind="anon").values_list("profile_id", "value"))
    for row in exposures:
        decision = engine.decide_unit(snapshot, anon[row.profile_id], {}, {}, [row.experience_key])
        expected = decision.exposures[0]
        assert (row.arm, row.variant_key) == (expected["arm"], expected["variant"])
    held_out = exposures.filter(experience_key="homepage-hero", arm="holdout_global").count()
    assert held_out / 500 == pytest.approx(project.global_holdout_share, abs=0.05)
    arms_per_profile = Counter(exposures.filter(arm="holdout_global").values_list("profile_id", flat=True))
    assert set(arms_per_profile.values()) == {len(demo.EXPERIENCES)}, "the global holdout spans every experience"
    segments = set(exposures.filter(experience_key="homepage-hero", arm="variant").values_list("segment", flat=True))
    assert segments <= set(demo.INTENTS) and len(segments) > 4

    # Outcomes as the drain computes them: purchases within the attribution window after exposure.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM personalization_exposure x WHERE x.project_id = %s AND x.conversions <> ("
            " SELECT count(*) FROM personalization_event e WHERE e.profile_id = x.profile_id AND e.type = x.goal"
            " AND e.ts >= x.exposed_at AND e.ts < x.exposed_at + x.window_hours * interval '1 hour')",
            [project.pk],
        )
        assert cursor.fetchone()[0] == 0
    assert exposures.filter(converted=True).exists()

    # Redis: attributes for decide, and the history's arms as sticky assignments.
    unit = redis_client.worker().hgetall(rkeys.unit(project.pk, "d0"))
    fields = {k.decode(): v.decode() for k, v in unit.items()}
    assert fields["attr:intent"] in demo.INTENTS
    assert {f"a:{spec.key}" for spec in demo.EXPERIENCES} <= set(fields)

    # make run calls --if-empty on every start: nothing happens when the demo exists.
    call_command("demo_seed", "--if-empty", "--keys-file", str(keys_file))
    assert Profile.objects.filter(project=project).count() == 500
    assert json.loads(keys_file.read_text())["public_key"] == keys["public_key"]
    with pytest.raises(CommandError, match="--reset"):
        call_command("demo_seed", "--keys-file", str(keys_file))
    stream = redis_client.worker()
    stream.xadd(rkeys.EVENTS_STREAM, {"p": project.pk, "d": b"[]", "r": "x"})
    other = stream.xadd(rkeys.EVENTS_STREAM, {"p": project.pk + 1000, "d": b"[]", "r": "x"})
    with django_capture_on_commit_callbacks(execute=True):
        call_command("demo_seed", "--reset", "--profiles", "50", "--days", "1", "--keys-file", str(keys_file))
    assert [entry_id for entry_id, _ in stream.xrange(rkeys.EVENTS_STREAM)] == [other], "the old demo's batches go"
    assert Profile.objects.filter(project__slug="demo-shop").count() == 50
    assert ClusteringRun.objects.filter(project__slug="demo-shop", status="queued").count() == 1, "first segments"
    assert not Profile.objects.filter(project_id=project.pk).exists()
    auth.cache_clear()
    assert auth.api_key_lookup(keys["public_key"]) is None


@pytest.mark.django_db(transaction=True)
def test_demo_traffic__live_server__decides_and_sends_events(live_server, tmp_path):
    keys_file = tmp_path / "keys.json"
    demo_services.demo_seed(profiles=200, days=1, seed=7, keys_path=keys_file)
    messages = []
    url = live_server.url.replace("localhost", "127.0.0.1")  # "localhost" may try ::1 first and wait
    # The test server's first request is slow (seconds); warm it up before timing the traffic.
    urllib.request.urlopen(f"{url}/healthz", timeout=30).read()  # noqa: S310 -- our own http:// test server
    traffic = Traffic(url=url, rate=20, keys_file=keys_file, say=messages.append, stop=threading.Event())
    stats = traffic.run(3.0)
    assert stats["decisions"] >= 3 and stats["decisions"] == stats["visits"]  # a loaded CI box is slow
    assert stats["events"] > 0 and stats["errors"] == 0, messages


def test_demo_traffic__server_down__waits_without_crashing(tmp_path):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"public_key": "kp_x", "profiles": 50, "seed": 7}))
    messages = []
    traffic = Traffic(
        url="http://127.0.0.1:9", rate=20, keys_file=keys_file, say=messages.append, stop=threading.Event()
    )
    stats = traffic.run(1.0)
    assert stats["visits"] == 0
    assert any("cannot reach" in m for m in messages)
