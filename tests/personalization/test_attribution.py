"""Exposure outcomes are kept by the drain: conversions within the attribution window, revenue,
pre-exposure activity; exactly once, whatever order exposures and events arrive in."""

from datetime import UTC, datetime, timedelta

import pytest

from personalization import services
from personalization.models import Exposure
from tests.factories import events_post

NOW = datetime.now(UTC).replace(microsecond=0)


def at(hours: float) -> str:
    return (NOW - timedelta(hours=48) + timedelta(hours=hours)).isoformat()


def send(client, key, events):
    response = events_post(client, key, events)
    assert response.status_code == 200, response.content
    while services.events_drain(claim_idle_ms=0):
        pass


@pytest.fixture(autouse=True)
def spring_email(request):
    """The campaign these exposures belong to, registered as assigned outside Kairos, 24 h window."""
    if "project" not in request.fixturenames:
        return None
    project = request.getfixturevalue("project")
    return services.experience_create(
        project=project,
        key="spring_email",
        name="Spring email",
        touchpoint="email",
        variants=[{"key": "a", "is_control": True}, {"key": "b"}, {"key": "c"}],
        attribution_hours=24,
        holdout_share=0.5,
        external=True,
    )


def exposure(event_id, user, hours, **props):
    properties = {"experience": "spring_email", "variant": "b", **props}
    return {
        "event_id": event_id,
        "type": "exposure",
        "anonymous_id": user,
        "timestamp": at(hours),
        "properties": {k: v for k, v in properties.items() if v is not None},
    }


def purchase(event_id, user, hours, value):
    return {"event_id": event_id, "type": "purchase", "anonymous_id": user, "timestamp": at(hours), "value": value}


@pytest.mark.django_db
def test_outcomes__purchase_inside_window_counts__before_or_after_does_not(client, project, public_key):
    send(
        client,
        public_key,
        [
            {
                "event_id": "pv",
                "type": "page_view",
                "anonymous_id": "ann",
                "timestamp": at(-5),
                "properties": {"url": "/"},
            },
            purchase("early", "ann", -1, 5),
            exposure("x1", "ann", 0),
        ],
    )
    send(client, public_key, [purchase("p1", "ann", 2, 30), purchase("p2", "ann", 30, 70)])
    row = Exposure.objects.get(project=project)
    assert row.converted and row.conversions == 1
    assert float(row.revenue) == 30.0
    assert row.pre_activity == 2, "the page view and the early purchase came before exposure"
    assert row.arm == "variant" and row.source == "api"


@pytest.mark.django_db
def test_outcomes__exposure_sent_after_the_purchase__backfilled(client, project, public_key):
    send(client, public_key, [purchase("p1", "bob", 3, 12.5)])
    send(client, public_key, [exposure("x1", "bob", 0, holdout=True, variant=None)])
    row = Exposure.objects.get(project=project)
    assert row.arm == "holdout_experience" and row.variant_key == ""
    assert row.converted and float(row.revenue) == 12.5


@pytest.mark.django_db
def test_outcomes__same_events_sent_twice__counted_once(client, project, public_key):
    send(client, public_key, [exposure("x1", "cy", 0)])
    batch = [purchase("p1", "cy", 1, 10), purchase("p2", "cy", 2, 20)]
    send(client, public_key, batch)
    send(client, public_key, batch)
    row = Exposure.objects.get(project=project)
    assert row.conversions == 2 and float(row.revenue) == 30.0


@pytest.mark.django_db
def test_outcomes__second_exposure_ignored__first_one_kept(client, project, public_key):
    send(client, public_key, [exposure("x1", "di", 0), exposure("x2", "di", 5, variant="c")])
    rows = list(Exposure.objects.filter(project=project).values_list("variant_key", flat=True))
    assert rows == ["b"]


@pytest.mark.django_db(transaction=True)
def test_outcomes__two_drains_at_once__purchase_still_attributed(client, project, public_key, monkeypatch):
    # Drain A stores the exposure and, before it commits, drain B stores the purchase. Each sees only
    # committed rows, so without the profile lock neither attributes the purchase to the exposure.
    import threading

    from django.db import connection

    from personalization.ingest import drain as events_service

    paused, release = threading.Event(), threading.Event()
    original = events_service._exposures_write

    def exposures_write_then_wait(*args, **kwargs):
        original(*args, **kwargs)
        paused.set()
        release.wait(10)

    def drain(consumer):
        try:
            events_service.events_drain(consumer=consumer, claim_idle_ms=600_000)
        finally:
            connection.close()

    def post(events):
        response = events_post(client, public_key, events)
        assert response.status_code == 200, response.content

    monkeypatch.setattr(events_service, "_exposures_write", exposures_write_then_wait)
    post([exposure("xa", "racer", 0)])
    first = threading.Thread(target=drain, args=("drain-a",))
    first.start()
    assert paused.wait(10), "drain A never reached its exposure write"

    post([purchase("pa", "racer", 2, 30)])
    second = threading.Thread(target=drain, args=("drain-b",))
    second.start()
    second.join(1.5)  # with the lock it waits for drain A; without it, it finishes here unseen
    release.set()
    first.join(10)
    second.join(10)

    row = Exposure.objects.get(project=project, experience_key="spring_email")
    assert (row.converted, row.conversions, float(row.revenue)) == (True, 1, 30.0)


@pytest.mark.django_db
def test_outcomes__conversion_exactly_at_window_end__counts(client, project, public_key):
    send(client, public_key, [exposure("x1", "edge", 0), exposure("x2", "late", 0)])
    send(client, public_key, [purchase("p1", "edge", 24, 40), purchase("p2", "late", 24.001, 40)])
    rows = dict(Exposure.objects.filter(project=project).values_list("profile__identities__value", "converted"))
    assert rows == {"edge": True, "late": False}
    # …and the same when the exposure arrives after the purchase (the backfill path)
    send(client, public_key, [purchase("p3", "back", 24, 10)])
    send(client, public_key, [exposure("x3", "back", 0)])
    assert Exposure.objects.get(project=project, profile__identities__value="back").converted


@pytest.mark.django_db
def test_outcomes__goal_and_window_come_from_the_registered_experience(client, project, public_key, spring_email):
    services.experience_update(experience=spring_email, goal_event="signup", attribution_hours=2)
    response = events_post(
        client, public_key, [exposure("x1", "fay", 0, goal="purchase", window_hours=500, arm="holdout_global")]
    )
    assert response.status_code == 200
    warned = {w["field"] for w in response.json()["warnings"]}
    assert warned == {"properties.goal", "properties.window_hours", "properties.arm"}
    send(client, public_key, [{**purchase("p1", "fay", 1, 9), "type": "signup"}, purchase("p2", "fay", 1, 20)])
    send(client, public_key, [{**purchase("p3", "fay", 3, 9), "type": "signup"}])
    row = Exposure.objects.get(project=project)
    assert (row.goal, row.window_hours, row.arm) == ("signup", 2, "variant")
    assert row.conversions == 1  # the signup inside 2 h; the purchase is not the goal, the later signup is outside


@pytest.mark.django_db
def test_exposure__unregistered_experience__refused_saying_how_to_register(client, project, public_key):
    response = events_post(
        client, public_key, [{**exposure("x1", "gus", 0), "properties": {"experience": "nope", "variant": "b"}}]
    )
    assert response.status_code == 400
    (problem,) = response.json()["rejected"]
    assert problem["field"] == "properties.experience"
    assert "register it" in problem["message"] and "/api/v1/experiences/" in problem["message"]


@pytest.mark.django_db
def test_exposure__unknown_variant__refused_listing_the_registered_ones(client, project, public_key):
    response = events_post(client, public_key, [exposure("x1", "hal", 0, variant="typo")])
    assert response.status_code == 400
    (problem,) = response.json()["rejected"]
    assert problem["field"] == "properties.variant" and "use one of: a, b, c" in problem["message"]
    held = events_post(client, public_key, [exposure("x2", "ida", 0, holdout=True, variant=None)])
    assert held.status_code == 200 and held.json()["accepted"] == 1  # a holdout names no variant
