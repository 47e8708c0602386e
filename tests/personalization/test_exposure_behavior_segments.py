"""Every exposure records the unit's behavior-segment memberships at exposure time (the keys in its
unit hash's "segs"), whatever its arm and wherever it comes from, so lift can break down by them."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from personalization import redis_client, rkeys, services
from personalization.decide import engine
from personalization.models import Exposure, ProfileIdentity
from tests import factories
from tests.factories import engine_snapshot
from tests.personalization.test_decide import drain_all, make_experience, post_decide

# What the segments app publishes: a clustering-run key, a lookalike key and a rule key, or nothing.
MEMBERSHIPS = ["b7.0 ll-3f2a", "b7.1", "b7.2 repeat-buyers ll-3f2a", "", None]


def _hash_set(project, unit: str, segs: str | None) -> None:
    """The unit hash as segments.services.memberships_publish leaves it (None: never published)."""
    if segs is not None:
        redis_client.worker().hset(rkeys.unit(project.pk, unit), "segs", segs)


def _recorded(project, experience_key: str) -> dict[str, tuple[str, list[str] | None]]:
    """unit id → (arm, behavior_segments) of its exposure."""
    units = dict(ProfileIdentity.objects.filter(project=project).values_list("profile_id", "value"))
    rows = Exposure.objects.filter(project=project, experience_key=experience_key)
    return {units[r.profile_id]: (r.arm, r.behavior_segments) for r in rows}


def test_engine__every_arm__carries_the_hash_segments_and_none_in_fallback():
    snapshot, _ = engine_snapshot(policy="fixed", holdout_share=0.4, segment_field="")
    arms = set()
    for n in range(200):
        (exposure,) = engine.decide_unit(snapshot, f"u{n}", {"segs": "b7.1 ll-x"}, {}).exposures
        arms.add(exposure["arm"])
        assert exposure["segs"] == "b7.1 ll-x"
        assert exposure["segment"] == ""  # the per-experience segment keeps its meaning
        (unknown,) = engine.decide_unit(snapshot, f"u{n}", {}, {}).exposures
        assert unknown["segs"] == ""  # a hash without segs: in no segment
        (fallback,) = engine.decide_unit(snapshot, f"u{n}", {}, {}, fallback=True).exposures
        assert fallback["segs"] is None  # Redis away: not known
    assert arms == {"variant", "holdout_global", "holdout_experience"}


@pytest.mark.django_db
def test_decide__exposure_of_each_arm__records_the_memberships_in_the_hash(client, project, public_key):
    services.project_holdout_set(project=project, share=0.2)
    make_experience(project, holdout_share=0.25)
    services.snapshot_publish(project_id=project.pk)
    expected = {}
    for i in range(300):
        unit, segs = f"v{i}", MEMBERSHIPS[i % len(MEMBERSHIPS)]
        _hash_set(project, unit, segs)
        expected[unit] = (segs or "").split()
        status, _ = post_decide(client, public_key, {"anonymous_id": unit})
        assert status == 200
    drain_all()
    recorded = _recorded(project, "hero")
    assert set(recorded) == set(expected)
    assert {arm for arm, _ in recorded.values()} == {"variant", "holdout_global", "holdout_experience"}
    for unit, (arm, segments) in recorded.items():
        assert segments == expected[unit], (unit, arm)
    # The per-experience segment column is untouched: this experience has no segment field.
    assert set(Exposure.objects.filter(project=project).values_list("segment", flat=True)) == {""}


@pytest.mark.django_db
def test_exposure_event_from_outside__records_the_persons_memberships(client, project, public_key):
    factories.external_experience_make(project=project, key="email-promo")
    _hash_set(project, "known-user", "b7.2 repeat-buyers")
    _hash_set(project, "anon-only", "b7.0")
    _hash_set(project, "both-user", "b7.1")  # the user id's hash wins over the anonymous one's
    _hash_set(project, "both-anon", "b7.0")
    _hash_set(project, "late-user", "b7.1")
    now = datetime.now(UTC).isoformat()

    def exposure(n: int, **ids) -> dict:
        # "segs" and "source" sent by a client are dropped at ingest: nobody can claim memberships.
        properties = {"experience": "email-promo", "variant": "a", "segs": "forged", "source": "decide"}
        return {"event_id": f"x{n}", "type": "exposure", "timestamp": now, "properties": properties, **ids}

    response = factories.events_post(
        client,
        public_key,
        [
            exposure(1, user_id="known-user"),
            exposure(2, anonymous_id="anon-only"),
            exposure(3, user_id="both-user", anonymous_id="both-anon"),
            exposure(4, user_id="stranger"),
            # Three days late (an app that was offline): today's segments are not those of then.
            {**exposure(5, user_id="late-user"), "timestamp": (datetime.now(UTC) - timedelta(days=3)).isoformat()},
        ],
    )
    assert response.status_code == 200 and response.json()["accepted"] == 5, response.content
    assert {w["field"] for w in response.json()["warnings"]} == {"properties.segs", "properties.source"}
    drain_all()
    recorded = _recorded(project, "email-promo")
    assert recorded["known-user"] == ("variant", ["b7.2", "repeat-buyers"])
    assert recorded["anon-only"] == ("variant", ["b7.0"])
    assert recorded.get("both-user", recorded.get("both-anon")) == ("variant", ["b7.1"])
    assert recorded["stranger"] == ("variant", [])  # known to Kairos now, in no segment
    assert recorded["late-user"] == ("variant", None)  # not known for then
    assert set(Exposure.objects.filter(project=project).values_list("source", flat=True)) == {"api"}


@pytest.mark.django_db
def test_decide_exposure_queued_before_segments_were_kept__recorded_as_unknown(project):
    """A decide process of the previous release queues exposures without "segs": they stay NULL,
    which the Lift page counts as recorded before segments were kept, never as "in no segment"."""
    make_experience(project)
    now = datetime.now(UTC).isoformat()
    old = {"experience": "hero", "variant": "v1", "arm": "variant", "reason": "fixed_split", "segment": ""}
    events = [
        {
            "event_id": f"xold{i}",
            "type": "exposure",
            "user_id": None,
            "anonymous_id": f"old{i}",
            "ts": now,
            "session_id": "",
            "value": None,
            "properties": {**old, "source": "decide", "goal": "purchase", "window_hours": 72},
        }
        for i in range(3)
    ]
    _hash_set(project, "old0", "b7.0")
    client = redis_client.worker()
    client.xadd(rkeys.EVENTS_STREAM, {"p": project.pk, "d": orjson.dumps(events), "r": now})
    drain_all()
    assert list(Exposure.objects.filter(project=project).values_list("behavior_segments", flat=True)) == [None] * 3


@pytest.mark.django_db
def test_decide__oversized_segs_field__stored_bounded_and_never_breaks_the_drain(client, project, public_key):
    make_experience(project)
    many = [f"ll-{i:04d}" for i in range(300)]
    _hash_set(project, "crowded", " ".join([*many, "x" * 65, many[0]]))
    status, _ = post_decide(client, public_key, {"anonymous_id": "crowded"})
    assert status == 200
    drain_all()
    (recorded,) = Exposure.objects.filter(project=project).values_list("behavior_segments", flat=True)
    assert recorded == many[:200]  # at most 200 keys, each once, no word longer than a key can be


@pytest.mark.django_db
def test_drain__unit_hashes_unreadable__outside_exposure_stored_as_unknown_not_lost(
    client, project, public_key, settings
):
    """A real Redis refusing the drain's unit-hash reads (an ACL without HGET): the exposure is
    stored all the same, its segments unknown (NULL), not "in no segment", and not held back."""
    factories.external_experience_make(project=project, key="email-promo")
    _hash_set(project, "known-user", "b7.2")
    now = datetime.now(UTC).isoformat()
    event = {"event_id": "x1", "type": "exposure", "user_id": "known-user", "timestamp": now}
    event["properties"] = {"experience": "email-promo", "variant": "a"}
    assert factories.events_post(client, public_key, [event]).status_code == 200

    admin = redis_client.worker()
    admin.acl_setuser("drain-no-hget", enabled=True, passwords=["+no-hget"], keys=["*"], commands=["+@all", "-hget"])
    original = settings.REDIS_URL
    settings.REDIS_URL = original.replace("redis://", "redis://drain-no-hget:no-hget@", 1)
    redis_client.reset()
    try:
        drain_all()
    finally:
        settings.REDIS_URL = original
        redis_client.reset()
        redis_client.worker().acl_deluser("drain-no-hget")
    (recorded,) = Exposure.objects.filter(project=project).values_list("behavior_segments", flat=True)
    assert recorded is None
    assert redis_client.worker().xlen(rkeys.EVENTS_STREAM) == 0  # acknowledged and gone: nothing waits
