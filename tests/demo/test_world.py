"""demo.world: the simulated visitors, their behavior and how they answer to content (pure; one test checks
its live-state fold against the real events script in Redis)."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from demo import world as demo
from personalization import redis_client, rkeys
from personalization.ingest.schema import batch_validate
from personalization.people import journey, live_session

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


def test_history__visit_conversion__between_2_and_5_percent(history):
    purchases = sum(s.events[-1]["type"] == "purchase" for s in history)
    expected = sum(demo.conversion_probability(s.profile.intent, s.shown) for s in history) / len(history)
    assert 0.02 <= expected <= 0.04
    # Repeat buyers (demo.REPEAT_BUYER_SHARE) make more of the visits and buy on more of them: a shop's
    # returning customers convert at several times its newcomers' rate, which lifts the average.
    assert 0.02 <= purchases / len(history) <= 0.05
    repeat = [s for s in history if s.profile.repeat_buyer]
    rate = sum(s.events[-1]["type"] == "purchase" for s in repeat) / len(repeat)
    assert rate > 2 * purchases / len(history)


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


def test_visitor_state__demo_visits__read_as_the_events_script_folds_them_in_redis(history):
    # The demo folds its own events (it runs without Redis); the stage it records at exposure must be
    # the one decide reads from the state the events script writes. Fold the same visits both ways.
    client, project = redis_client.worker(), 990_017
    checked, stages, states = 0, Counter(), {}
    stale = client.keys(f"{rkeys.unit(project, '')}*")
    if stale:
        client.delete(*stale)
    for session in history[:300]:
        # One state per visitor across visits, as the unit hash keeps it.
        state = states.setdefault(session.profile.n, demo.VisitorState())
        for event in session.events:
            state.fold(event)
            at = event["ts"].timestamp()
            sent = {
                "type": event["type"],
                "anonymous_id": session.profile.anonymous_id,
                "ts": event["ts"].isoformat(),
                "properties": event["properties"],
            }
            assert live_session.live_update(client, project_id=project, events=[sent], now=at + 1, digest=str) == [1]
            raw = client.hgetall(rkeys.unit(project, session.profile.anonymous_id))
            redis_state = live_session.live_state_parse({k.decode(): v.decode() for k, v in raw.items()})
            later = event["ts"] + timedelta(seconds=5)
            theirs = live_session.session_view(redis_state, now=later.timestamp())
            ours = state.view(later)
            expected = {k: v for k, v in journey.measures_of(theirs).items() if k != "minutes"}
            assert {k: v for k, v in journey.measures_of(ours).items() if k != "minutes"} == expected
            assert journey.stage_of(ours).stage == journey.stage_of(theirs).stage
            stages[journey.stage_of(ours).stage] += 1
            checked += 1
    client.delete(*client.keys(f"{rkeys.unit(project, '')}*"))
    assert checked > 1000 and {"exploring", "comparing", "deciding", "bought"} <= set(stages)


def test_history__planted_session_behavior__puts_intents_in_their_stages(history):
    # Researchers compare before buying; bargain hunters put things in the cart (and mostly leave);
    # casual walkers browse categories and mostly stay exploring.
    comparing, deciding, visits = Counter(), Counter(), Counter()
    for session in history:
        state = demo.VisitorState()
        for event in session.events:
            state.fold(event)
            if event["type"] == "add_to_cart":
                break
        visits[session.profile.intent] += 1
        stage = journey.stage_of(state.view(session.start)).stage
        comparing[session.profile.intent] += stage == "comparing"
        deciding[session.profile.intent] += stage == "deciding"
    share = {intent: comparing[intent] / visits[intent] for intent in visits}
    assert share["gear_researcher"] > 2 * share["casual_walker"]
    assert share["marathon_trainer"] > 2 * share["casual_walker"]
    carts = {intent: deciding[intent] / visits[intent] for intent in visits}
    assert max(carts, key=carts.__getitem__) == "bargain_hunter"


def test_history__long_term_discount__fewer_visits_a_week_after_exposure():
    # The long-term story's variant keeps 30 % of the visits a week or more after its first showing;
    # its control keeps them all, and the visits before showing are drawn alike.
    spec = demo.LONG_TERM_EXPERIENCES[0]
    profiles = demo.profiles_generate(200, seed=5)
    starts = {spec.key: END - timedelta(days=spec.started_days_ago)}
    shown = {p.n: (spec.variants[p.n % 2].key) for p in profiles}
    later = {"none": 0, "half-off": 0}
    first: dict[int, datetime] = {}
    for session in demo.history_generate(
        profiles, end=END, days=demo.LONG_TERM_MIN_DAYS, seed=5, arms=lambda p: {spec.key: shown[p.n]}, starts=starts
    ):
        if spec.key in session.exposed:
            seen = first.setdefault(session.profile.n, session.start)
            later[shown[session.profile.n]] += session.start - seen >= timedelta(days=7)
    assert later["half-off"] < 0.5 * later["none"], later
