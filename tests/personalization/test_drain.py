"""The drain's write path: events copied straight into the table once per (project, event_id), the
way round an event already stored, outcomes counted from what a batch inserted, and the people's
last_seen. Crashes and faults are in test_drain_crash.py and test_faults.py."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from personalization import redis_client, rkeys, services
from personalization.models import DeadLetter, Event, Exposure, Profile, ProfileIdentity
from tests.factories import events_post, external_experience_make

NOW = datetime.now(UTC).replace(microsecond=0)


def at(hours: float) -> str:
    return (NOW - timedelta(hours=hours)).isoformat()


def post(client, key, events) -> None:
    response = events_post(client, key, events)
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == len(events)


def drain_all() -> int:
    total = 0
    while moved := services.events_drain(claim_idle_ms=0):
        total += moved
    return total


def event(event_id: str, etype: str, visitor: str, hours_ago: float, **fields) -> dict:
    return {"event_id": event_id, "type": etype, "anonymous_id": visitor, "timestamp": at(hours_ago), **fields}


def page_view(event_id: str, visitor: str, hours_ago: float, url: str = "/") -> dict:
    return event(event_id, "page_view", visitor, hours_ago, properties={"url": url})


def purchase(event_id: str, visitor: str, hours_ago: float, value: float) -> dict:
    return event(event_id, "purchase", visitor, hours_ago, value=value)


def exposure_make(event_id: str, visitor: str, hours_ago: float, experience: str) -> dict:
    return event(event_id, "exposure", visitor, hours_ago, properties={"experience": experience, "variant": "b"})


def stored_urls(project) -> dict[str, str]:
    return dict(Event.objects.filter(project=project).values_list("event_id", "properties__url"))


@pytest.mark.django_db
def test_drain__a_retry_in_the_same_batch__stored_once_as_first_sent(client, project, public_key):
    post(client, public_key, [page_view("e1", "v1", 3, "/first"), page_view("e2", "v1", 2, "/first")])
    # The SDK's retry of e2 (here with other content) lands in the same drain step as the original.
    post(client, public_key, [page_view("e2", "v1", 2, "/retry"), page_view("e3", "v2", 1)])

    assert drain_all() == 4
    assert stored_urls(project) == {"e1": "/first", "e2": "/first", "e3": "/"}
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db
def test_drain__events_already_stored_among_new_ones__new_stored_old_skipped_outcomes_once(client, project, public_key):
    external_experience_make(project=project, key="spring_email", attribution_hours=24)
    exposure = exposure_make("x1", "buyer", 5, "spring_email")
    post(client, public_key, [exposure, page_view("old-1", "buyer", 4), purchase("p1", "buyer", 3, 20.0)])
    assert drain_all() == 3
    first = Exposure.objects.get(project=project)
    assert (first.conversions, first.revenue) == (1, 20)

    # A later batch repeats stored events (retries that arrived late) next to new ones: the straight
    # copy meets the unique key, and the batch is written the way that skips what is stored.
    post(
        client,
        public_key,
        [
            page_view("old-1", "buyer", 4, "/again"),
            purchase("p1", "buyer", 3, 20.0),
            page_view("new-1", "buyer", 2),
            purchase("p2", "buyer", 1, 15.5),
            page_view("new-2", "someone-else", 1),
        ],
    )
    assert drain_all() == 5
    assert stored_urls(project) == {"old-1": "/", "p1": None, "new-1": "/", "p2": None, "new-2": "/"}
    assert Event.objects.filter(project=project).count() == 5
    exposed = Exposure.objects.get(project=project)
    assert (exposed.conversions, exposed.revenue, exposed.converted) == (2, pytest.approx(35.5), True)
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db
def test_drain__purchase_value_with_more_decimals__outcome_revenue_rounds_as_the_stored_event(
    client, project, public_key
):
    external_experience_make(project=project, key="hero", attribution_hours=24)
    exposure = exposure_make("x1", "buyer", 5, "hero")
    post(client, public_key, [exposure])
    drain_all()
    post(client, public_key, [purchase("p1", "buyer", 3, 10.005), purchase("p2", "buyer", 2, 0.125)])
    drain_all()

    # Stored as numeric(14,2): 10.01 and 0.13; the outcome adds those, not what was sent.
    stored = sum(Event.objects.filter(project=project, type="purchase").values_list("value", flat=True))
    assert float(stored) == 10.14
    assert Exposure.objects.get(project=project).revenue == 10.14


@pytest.mark.django_db
def test_drain__new_and_known_people__first_and_last_seen_from_their_events(client, project, public_key):
    # A new person's events out of time order.
    events = [page_view("a", "v1", 3), page_view("b", "v1", 1), page_view("c", "v1", 2)]
    post(client, public_key, events)
    post(client, public_key, [page_view("d", "v2", 6)])
    drain_all()
    v1 = Profile.objects.get(project=project, identities__value="v1")
    v2 = Profile.objects.get(project=project, identities__value="v2")
    assert (v1.first_seen.isoformat(), v1.last_seen.isoformat()) == (at(3), at(1))
    assert (v2.first_seen.isoformat(), v2.last_seen.isoformat()) == (at(6), at(6))

    # Known now: a newer event moves last_seen forward, an older one never moves it back.
    post(client, public_key, [page_view("e", "v1", 4), page_view("f", "v2", 0.25)])
    drain_all()
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.first_seen.isoformat(), v1.last_seen.isoformat()) == (at(3), at(1))
    assert (v2.first_seen.isoformat(), v2.last_seen.isoformat()) == (at(6), at(0.25))


@pytest.mark.django_db
def test_drain__a_new_persons_exposure_after_their_events__not_their_last_seen(client, project, public_key):
    external_experience_make(project=project, key="hero", attribution_hours=24)
    exposure = exposure_make("x1", "v1", 0.5, "hero")
    post(client, public_key, [page_view("a", "v1", 3), exposure, page_view("b", "v1", 2)])
    drain_all()
    person = Profile.objects.get(project=project, identities__value="v1")
    assert (person.first_seen.isoformat(), person.last_seen.isoformat()) == (at(3), at(2))
    assert Exposure.objects.get(project=project).profile_id == person.pk


def stream_state() -> tuple[int, int]:
    """(entries in the stream, entries read but not acknowledged)."""
    client = redis_client.worker()
    return client.xlen(rkeys.EVENTS_STREAM), client.xpending(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP)["pending"]


@pytest.mark.django_db
def test_drain_backlog__steps_read_ahead_with_claims_at_once__every_event_once_counted_once(
    client, project, public_key
):
    for b in range(6):
        post(client, public_key, [page_view(f"b{b}-{i}", f"v{i}", 1) for i in range(50)])

    # One entry per step, and claim_idle_ms=0: the read ahead would claim the entry being written
    # (idle for milliseconds) and write it again, if it did not leave it to the step under way.
    assert services.events_drain_backlog(max_entries=1, claim_idle_ms=0) == 300
    assert Event.objects.filter(project=project).count() == 300
    assert Event.objects.filter(project=project).values("event_id").distinct().count() == 300
    assert stream_state() == (0, 0)


@pytest.mark.django_db
def test_drain_backlog__a_step_with_nothing_to_copy__the_steps_after_it_drained_in_the_same_call(
    client, project, public_key
):
    """The next step is read once the step's COPY is under way; a step that copies no event (an
    exposure alone here) must still read the next, or the backlog would stop early."""
    external_experience_make(project=project, key="hero", attribution_hours=24)
    post(client, public_key, [exposure_make("x1", "v0", 1, "hero")])
    for b in range(2):
        post(client, public_key, [page_view(f"b{b}-{i}", f"v{i}", 1) for i in range(5)])

    assert services.events_drain_backlog(max_entries=1) == 11
    assert Event.objects.filter(project=project).count() == 10
    assert Exposure.objects.filter(project=project).count() == 1
    assert stream_state() == (0, 0)


@pytest.mark.django_db
def test_drain_backlog__budget_spent__the_step_under_way_finished_nothing_read_ahead(client, project, public_key):
    for b in range(3):
        post(client, public_key, [page_view(f"b{b}-{i}", f"v{i}", 1) for i in range(10)])

    assert services.events_drain_backlog(budget_seconds=0, max_entries=1) == 10
    assert Event.objects.filter(project=project).count() == 10
    assert stream_state() == (2, 0), "the rest waits in the stream, none of it held by this drain"
    assert services.events_drain_backlog(max_entries=1) == 20
    assert stream_state() == (0, 0)


@pytest.mark.django_db
def test_drain__stream_gone_under_a_running_drain__group_made_again_and_drains_on(client, project, public_key):
    """Redis emptied, or a node back without its data, between a drain's steps: its next read finds
    no group. The step reads nothing, the group is there again, and the next events are drained (the
    events_drain process used to exit on the NOGROUP error)."""
    from personalization.ingest import drain

    worker = redis_client.worker()
    assert drain_all() == 0  # the group exists, as after any drain step
    worker.delete(rkeys.EVENTS_STREAM)
    assert drain._read_entries(worker, "drain-a", 10, 0) == []
    assert [g["name"] for g in worker.xinfo_groups(rkeys.EVENTS_STREAM)] == [rkeys.EVENTS_GROUP.encode()]
    post(client, public_key, [page_view("after", "anon-1", 0.1)])
    assert drain_all() == 1 and list(stored_urls(project)) == ["after"]


def identify(event_id: str, visitor: str, user_id: str, hours_ago: float) -> dict:
    return event(event_id, "identify", visitor, hours_ago, user_id=user_id)


@pytest.mark.django_db(transaction=True)
def test_drain_backlog__people_resolved_ahead_on_a_second_connection__merges_left_to_the_step_in_order(
    client, project, public_key, monkeypatch
):
    """The next step's people are resolved by the reader thread, on its own connection, while the
    current step is being written. A step that merges an anonymous profile into a user's is left to
    the step itself: the merge moves rows the step before may still be writing."""
    from django.db import connection

    from personalization.ingest import drain

    post(client, public_key, [identify("u-0", "phone", "user-1", 9)])
    drain_all()
    user = Profile.objects.get(project=project, external_id="user-1")

    resolved_ahead: list[bool] = []
    original = drain._step_resolve

    def spy(step) -> None:
        original(step)
        resolved_ahead.append(project.pk in step.profiles)

    monkeypatch.setattr(drain, "_step_resolve", spy)
    post(client, public_key, [page_view("a-1", "laptop", 5), page_view("a-2", "laptop", 4)])  # a new anonymous person
    post(client, public_key, [identify("a-3", "laptop", "user-1", 3)])  # ... who turns out to be user-1: a merge
    post(client, public_key, [page_view(f"n-{i}", f"new-{i}", 2) for i in range(5)])  # five new people
    post(client, public_key, [page_view("a-4", "laptop", 1), purchase("a-5", "phone", 1, 12.5)])

    sessions_before = _sessions_count()
    assert services.events_drain_backlog(max_entries=1) == 10
    assert not connection.in_atomic_block
    # The first step is read by the call itself; of the three read ahead, the merge was left to its step.
    assert resolved_ahead == [False, True, True]
    assert _sessions_count() == sessions_before, "the reader thread's connection is closed at the end"

    owners = dict(Event.objects.filter(project=project).values_list("event_id", "profile_id"))
    assert {owners[e] for e in ("u-0", "a-1", "a-2", "a-3", "a-4", "a-5")} == {user.pk}
    assert len({owners[f"n-{i}"] for i in range(5)} - {user.pk}) == 5
    assert Profile.objects.filter(project=project).count() == 6, "user-1 and the five new people; laptop merged"
    values = sorted(ProfileIdentity.objects.filter(project=project).values_list("value", flat=True))
    assert values == sorted(["phone", "user-1", "laptop", *(f"new-{i}" for i in range(5))])
    assert stream_state() == (0, 0)


def _sessions_count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_drain__values_copied_in_binary__times_offsets_numbers_and_text_stored_as_sent(client, project, public_key):
    """The COPY sends values in PostgreSQL's binary format: times with their offsets, numbers rounded
    by numeric(14,2) as text would be, and text with every character that text COPY would escape."""
    odd = {"note": 'tab\there\nnew line \\ back\\slash "quoted" ünïcödé 🛒 \\N', "nested": {"a": [1, 2.5, None, True]}}
    india = timezone(timedelta(hours=5, minutes=30))
    sent_at = (NOW - timedelta(hours=2)).replace(microsecond=250000)
    sent = [
        {
            **page_view("t-1", "v1", 0),
            "timestamp": sent_at.astimezone(india).isoformat(),
            "properties": {"url": "/x", **odd},
        },
        {**purchase("t-2", "v1", 1, 10.005), "session_id": "s-1 é"},
        purchase("t-3", "v1", 1, 999999999.99),
    ]
    post(client, public_key, sent)
    assert drain_all() == 3

    stored = {e.event_id: e for e in Event.objects.filter(project=project)}
    assert stored["t-1"].ts == sent_at
    assert stored["t-1"].properties == {"url": "/x", **odd}
    assert stored["t-1"].value is None
    assert (stored["t-2"].value, stored["t-2"].session_id) == (Decimal("10.01"), "s-1 é")
    assert stored["t-3"].value == Decimal("999999999.99")
    assert stored["t-2"].ts.isoformat() == at(1)
    assert abs(stored["t-2"].received_at - datetime.now(UTC)) < timedelta(minutes=5)
