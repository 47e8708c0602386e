import signal
import time

import orjson
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from personalization import rkeys, services
from personalization.decide import engine
from personalization.decide import runtime as decide_runtime
from personalization.models import BanditWeights, Exposure, Profile
from tests.factories import event_make, events_post


def variants(n=3, **extra):
    return [
        {"key": f"v{i}", "name": f"Variant {i}", "payload": {"headline": f"H{i}"}, "is_control": i == 0, **extra}
        for i in range(n)
    ]


def make_experience(project, key="hero", policy="fixed", start=True, **fields):
    experience = services.experience_create(
        project=project,
        key=key,
        name=key.title(),
        touchpoint="homepage hero",
        variants=variants(),
        policy=policy,
        **fields,
    )
    if start:
        services.experience_start(experience=experience)
    services.snapshot_publish(project_id=project.pk)
    return experience


def post_decide(client, key, body):
    response = client.post(
        "/api/v1/decide", data=orjson.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    return response.status_code, response.json()


def drain_all():
    decide_runtime.buffer.flush()
    while services.events_drain(claim_idle_ms=0):
        pass


@pytest.mark.django_db
def test_decide__same_user__same_variant_and_sticky_after_weights_change(client, project, public_key):
    make_experience(project, policy="bandit")
    _, first = post_decide(client, public_key, {"anonymous_id": "visitor-1"})
    chosen = first["assignments"]["hero"]
    assert chosen["reason"] in {"bandit", "holdout_global"}
    decide_runtime.buffer.flush()
    _, again = post_decide(client, public_key, {"anonymous_id": "visitor-1"})
    assert again["assignments"]["hero"]["variant"] == chosen["variant"]
    if chosen["reason"] == "bandit":
        assert again["assignments"]["hero"]["reason"] == "sticky"
        # a new allocation that gives the user's variant no traffic at all does not move them
        snap = orjson.loads(
            __import__("personalization.redis_client", fromlist=["x"]).worker().get(rkeys.snapshot(project.pk))
        )
        order = snap["experiences"]["hero"]["order"]
        snap["experiences"]["hero"]["weights"] = {"": [0.0 if k == chosen["variant"] else 0.5 for k in order]}
        decide_runtime.snapshots.by_project[project.pk] = (snap, time.monotonic())
        _, later = post_decide(client, public_key, {"anonymous_id": "visitor-1"})
        assert later["assignments"]["hero"] == {**chosen, "reason": "sticky"}


@pytest.mark.django_db
def test_decide__deterministic_without_sticky_state(project):
    make_experience(project)
    snapshot = services.snapshot_compile(project_id=project.pk) | {"version": 1}
    a = [engine.decide_unit(snapshot, f"u{i}", {}, {}).assignments["hero"]["variant"] for i in range(200)]
    b = [engine.decide_unit(snapshot, f"u{i}", {}, {}).assignments["hero"]["variant"] for i in range(200)]
    assert a == b
    assert len(set(a)) == 3


@pytest.mark.django_db
def test_holdout__global_share_within_bounds_inside_every_experience(project):
    for i in range(5):
        make_experience(project, key=f"exp{i}", holdout_share=0.1)
    snapshot = services.snapshot_compile(project_id=project.pk) | {"version": 1}
    n, share = 20_000, project.global_holdout_share
    held = {f"exp{i}": 0 for i in range(5)}
    exp_held = {f"exp{i}": 0 for i in range(5)}
    global_units = set()
    for i in range(n):
        decision = engine.decide_unit(snapshot, f"user-{i}", {}, {})
        for key, answer in decision.assignments.items():
            if answer["reason"] == "holdout_global":
                held[key] += 1
                global_units.add(i)
            elif answer["reason"] == "holdout_experience":
                exp_held[key] += 1
    sigma = (n * share * (1 - share)) ** 0.5
    for key, count in held.items():
        assert abs(count - n * share) < 4 * sigma, key
    # the same people are held out everywhere: exactly the global set in every experience
    assert all(count == len(global_units) for count in held.values())
    # experience holdouts are independent of the global one: ~10 % of the remaining users each
    rest = n - len(global_units)
    sigma_e = (rest * 0.1 * 0.9) ** 0.5
    for key, count in exp_held.items():
        assert abs(count - rest * 0.1) < 4 * sigma_e, key
    # and different experiences hold out different people (pairwise overlap ~ product of shares)
    sets = []
    for i in range(2):
        sets.append(
            {
                u
                for u in range(n)
                if engine.decide_unit(snapshot, f"user-{u}", {}, {}, [f"exp{i}"]).assignments[f"exp{i}"]["reason"]
                == "holdout_experience"
            }
        )
    overlap = len(sets[0] & sets[1])
    expected = rest * 0.01
    assert abs(overlap - expected) < 5 * expected**0.5


@pytest.mark.django_db
def test_decide__do_not_personalize__defaults_and_never_feeds_bandit(client, project, public_key):
    experience = make_experience(project, policy="bandit", bandit_burn_in=1)
    events_post(client, public_key, [event_make(1, anonymous_id="optout-1")])
    drain_all()
    Profile.objects.filter(project=project).update(do_not_personalize=True)
    services.profiles_publish(project_id=project.pk)
    for _ in range(3):
        _, answer = post_decide(client, public_key, {"anonymous_id": "optout-1"})
        assert answer["assignments"]["hero"] == {
            "variant": "v0",
            "payload": {"headline": "H0"},
            "reason": "not_personalized",
            "version": answer["assignments"]["hero"]["version"],
        }
    # consent withdrawn in the request itself is honoured too
    _, answer = post_decide(
        client, public_key, {"anonymous_id": "someone", "context": {"consent": {"personalization": False}}}
    )
    assert answer["assignments"]["hero"]["reason"] == "not_personalized"
    drain_all()
    assert Exposure.objects.filter(project=project).count() == 0
    services.bandit_update(experience_id=experience.pk)
    latest = BanditWeights.objects.filter(experience=experience).latest("computed_at")
    assert all(n == 0 for n, _ in latest.stats.values())


@pytest.mark.django_db
def test_decide__makes_no_sql_query(client, project, public_key):
    make_experience(project, key="a")
    make_experience(project, key="b", policy="bandit")
    make_experience(project, key="c", policy="segment_bandit", segment_attribute="plan")
    post_decide(client, public_key, {"anonymous_id": "warm"})  # key cache and snapshot warm
    with CaptureQueriesContext(connection) as queries:
        for i in range(20):
            status, answer = post_decide(client, public_key, {"user_id": f"u{i}", "context": {"device": "mobile"}})
            assert status == 200 and set(answer["assignments"]) == {"a", "b", "c"}
    assert len(queries) == 0, [q["sql"] for q in queries]


@pytest.mark.django_db
def test_decide__unknown_experience__listed_not_error(client, project, public_key):
    make_experience(project)
    status, answer = post_decide(client, public_key, {"anonymous_id": "x", "experiences": ["hero", "nope"]})
    assert status == 200
    assert answer["unknown_experiences"] == ["nope"]
    assert set(answer["assignments"]) == {"hero"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"anonymous_id": 5}, "anonymous_id"),
        ({"anonymous_id": "a", "context": "x"}, "context"),
        ({"anonymous_id": "a", "context": {"attributes": []}}, "context.attributes"),
        ({"anonymous_id": "a", "experiences": "hero"}, "experiences"),
        ([], "body"),
    ],
)
def test_decide__bad_input__400_naming_the_field(client, project, public_key, body, field):
    status, answer = post_decide(client, public_key, body)
    assert status == 400
    assert answer["error"]["field"] == field


@pytest.mark.django_db
def test_decide__exposures_recorded_once_per_user_and_holdouts_marked(client, project, public_key):
    make_experience(project, holdout_share=0.2)
    for _ in range(3):
        for i in range(60):
            post_decide(client, public_key, {"anonymous_id": f"p{i}"})
        decide_runtime.buffer.flush()
    drain_all()
    rows = list(Exposure.objects.filter(project=project).values_list("arm", "reason"))
    assert len(rows) == 60
    assert {arm for arm, _ in rows} <= {"variant", "holdout_global", "holdout_experience"}
    assert any(arm == "holdout_experience" for arm, _ in rows)


@pytest.mark.django_db
def test_bandit__burn_in_then_floor_respected(project):
    experience = make_experience(project, policy="bandit", bandit_floor=0.1, bandit_burn_in=100)
    profiles = [
        Profile(project=project, first_seen="2026-11-01T00:00Z", last_seen="2026-11-01T00:00Z") for _ in range(900)
    ]
    Profile.objects.bulk_create(profiles)

    def expose(subset, variant):
        Exposure.objects.bulk_create(
            Exposure(
                project=project, profile=p, experience_key="hero", variant_key=variant, exposed_at="2026-11-01T00:00Z"
            )
            for p in subset
        )

    expose(profiles[:50], "v0")
    expose(profiles[50:100], "v1")
    expose(profiles[100:150], "v2")
    weights = services.bandit_update(experience_id=experience.pk)
    assert weights[""] == pytest.approx([1 / 3] * 3), "burn-in: uniform until every arm has 100 exposures"
    expose(profiles[150:400], "v0")
    expose(profiles[400:650], "v1")
    expose(profiles[650:900], "v2")
    # v2 converts a lot, v0 and v1 never: v2 takes all it can, the others keep exactly the floor
    Exposure.objects.filter(profile__in=profiles[650:900:3], experience_key="hero").update(converted=True)
    weights = services.bandit_update(experience_id=experience.pk)[""]
    assert weights[0] == pytest.approx(0.1) and weights[1] == pytest.approx(0.1)
    assert weights[2] == pytest.approx(0.8)
    assert sum(weights) == pytest.approx(1.0)


@pytest.mark.django_db
def test_decide__redis_stops__fallback__then_recovers(client, project, public_key, own_redis):
    state, start = own_redis
    make_experience(project, policy="bandit")
    _, answer = post_decide(client, public_key, {"anonymous_id": "r1"})
    assert answer["assignments"]["hero"]["reason"] in {"bandit", "holdout_global"}
    decide_runtime.buffer.flush()

    state["proc"].send_signal(signal.SIGKILL)
    state["proc"].wait()
    status, answer = post_decide(client, public_key, {"anonymous_id": "r2"})
    assert status == 200
    assert answer["assignments"]["hero"]["reason"] == "fallback"
    assert answer["assignments"]["hero"]["variant"] in {"v0", "v1", "v2"}
    assert answer["version"] is not None, "answered from the in-process snapshot"

    state["proc"] = start()
    time.sleep(decide_runtime.REDIS_RETRY_SECONDS + 0.1)
    status, answer = post_decide(client, public_key, {"anonymous_id": "r3"})
    assert status == 200
    assert answer["assignments"]["hero"]["reason"] in {"bandit", "holdout_global"}


@pytest.mark.django_db
def test_identify__user_keeps_anonymous_variant_and_attributes_reach_decide(client, project, public_key):
    make_experience(project, key="by_plan", policy="segment_bandit", segment_attribute="plan")
    make_experience(
        project, key="gold_only", targeting={"attributes": [{"attribute": "plan", "op": "in", "values": ["gold"]}]}
    )
    project.global_holdout_share = 0.0
    project.save(update_fields=["global_holdout_share"])
    services.snapshot_publish(project_id=project.pk)
    _, before = post_decide(client, public_key, {"anonymous_id": "tab-1"})
    assert before["assignments"]["gold_only"]["reason"] == "targeting_miss"
    drain_all()
    identify = {
        "event_id": "id-1",
        "type": "identify",
        "anonymous_id": "tab-1",
        "user_id": "u-1",
        "properties": {"attributes": {"plan": "gold"}},
    }
    events_post(client, public_key, [identify])
    drain_all()
    _, after = post_decide(client, public_key, {"user_id": "u-1"})
    assert after["assignments"]["by_plan"] == {**before["assignments"]["by_plan"], "reason": "sticky"}
    assert after["assignments"]["gold_only"]["reason"] in {"fixed_split", "sticky"}
