"""The index of the last hour's active visitors (written by the events request) and what the live
pages read through it: sessions by journey stage, one visitor's state, and the privacy handlers."""

import time

import pytest

from personalization import redis_client, rkeys, services
from personalization.people import live_activity, live_session
from personalization.people.personal_data import Subject, location
from tests.factories import behavior_event_make as _event
from tests.factories import events_post


def _send(client, key: str, events: list[dict]) -> None:
    response = events_post(client, key, events)
    assert response.status_code == 200 and response.json()["accepted"] == len(events), response.content


@pytest.fixture
def live_project(project):
    # The events request keeps live state only once a snapshot says the project's consent settings.
    services.project_holdout_set(project=project, share=0)
    services.snapshot_publish(project_id=project.pk)
    return project


def _index(project_id: int) -> dict[str, float]:
    pairs = redis_client.worker().zrange(rkeys.live_active(project_id), 0, -1, withscores=True)
    return {unit.decode(): score for unit, score in pairs}


@pytest.mark.django_db
def test_events_request__indexes_each_unit_once__the_user_id_when_given_and_not_for_bookkeeping_events(
    client, live_project, public_key
):
    _send(
        client,
        public_key,
        [
            _event("page_view", "anon-1", url="/"),
            _event("page_view", "anon-1", url="/b"),
            _event("page_view", "anon-2", user="user-2", url="/"),
            _event("identify", "anon-3", user="user-3"),
        ],
    )
    index = _index(live_project.pk)
    assert set(index) == {"anon-1", "user-2"}
    assert all(abs(score - time.time()) < 120 for score in index.values())
    assert redis_client.worker().ttl(rkeys.live_active(live_project.pk)) > live_session.ACTIVE_WINDOW_SECONDS


def test_active_index__units_older_than_the_window_are_trimmed_by_the_next_write():
    client = redis_client.worker()
    now = time.time()
    old = [_event("page_view", "old", url="/")]
    live_session.live_update(
        client, project_id=7, events=old, now=now - live_session.ACTIVE_WINDOW_SECONDS - 5, digest=str
    )
    assert set(_index(7)) == {"old"}
    replies = live_session.live_update(
        client, project_id=7, events=[_event("page_view", "new", url="/")], now=now, digest=str
    )
    assert replies == [1]  # the scripts' replies only, the index's commands are not among them
    assert set(_index(7)) == {"new"}


@pytest.mark.django_db
def test_sessions_by_stage__counts_the_last_hours_states_and_skips_units_without_state(
    client, live_project, public_key
):
    events = [_event("page_view", "explorer", url="/")]
    events += [_event("page_view", "comparer", url=f"/p/{n}", item=f"shoe-{n}", category="trail") for n in range(3)]
    events += [_event("add_to_cart", "decider", item="tent"), _event("purchase", "buyer", item="tent")]
    _send(client, public_key, events)
    # An id in the index whose hash lost its state (do-not-personalize clears it at once).
    redis_client.worker().hdel(rkeys.unit(live_project.pk, "explorer"), *rkeys.UNIT_LIVE_FIELDS)
    stages = live_activity.sessions_by_stage(project=live_project)
    assert stages.active.total == 4 and not stages.active.capped
    assert stages.counts == {"bought": 1, "abandoned": 0, "deciding": 1, "comparing": 1, "exploring": 0}


@pytest.mark.django_db
def test_live_active_units__reads_at_most_the_limit__most_recent_first(live_project):
    client = redis_client.worker()
    now = time.time()
    for n in range(5):
        live_session.live_update(
            client,
            project_id=live_project.pk,
            events=[_event("page_view", f"v{n}", url="/")],
            now=now - 50 + n,
            digest=str,
        )
    active = live_activity.live_active_units(project_id=live_project.pk, fields=("ls",), limit=2)
    assert (active.total, active.read, active.capped) == (5, 2, True)
    assert [unit for unit, _ in active.units] == ["v4", "v3"]
    assert all("ls" in user for _, user in active.units)


@pytest.mark.django_db
def test_visitor_live__stage_reason_and_facts_of_one_visitor(client, live_project, public_key):
    _send(
        client,
        public_key,
        [_event("page_view", "v", url=f"/p/{n}", item=f"j-{n}", category="rain-jackets") for n in range(3)],
    )
    live = live_activity.visitor_live(project=live_project, unit_id="v")
    assert live["found"] and not live["opted_out"] and live["last_active"] is not None
    assert live["stage"].stage == "comparing"
    assert live["stage"].reason.startswith("3 rain jackets viewed in")
    assert live["facts"]["session.items_viewed"] == 3 and live["facts"]["device"] is None
    assert live_activity.visitor_live(project=live_project, unit_id="nobody") == {
        "found": False,
        "opted_out": False,
        "last_active": None,
    }


@pytest.mark.django_db
def test_privacy_location__exports_erases_and_verifies_the_index_entries(client, live_project, public_key):
    _send(client, public_key, [_event("page_view", "a", url="/"), _event("page_view", "b", url="/")])
    found = location("live_active")
    subject = Subject(project_id=live_project.pk, profile_ids=(), unit_ids=("a", "ghost"))
    exported = list(found.export(subject))
    assert [row["unit_id"] for row in exported] == ["a"] and exported[0]["last_event_at"] > 0
    assert found.verify(subject) == 1
    removed = []
    assert found.erase(subject, removed.append) == 1 and removed == [1]
    assert found.verify(subject) == 0
    assert set(_index(live_project.pk)) == {"b"}  # nobody else's entry goes
