"""Events and exposures partitioned by month (personalization/ingest/partitions.py): each event and
each first exposure still stored once whatever its month, the months made ahead of time, and
retention dropping whole months where every project is done with them."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from personalization import services
from personalization.ingest.partitions import month_add, month_floor, partition_name, partitions_list
from personalization.models import Event, EventClaim, Exposure, ExposureClaim, Profile, ProfileIdentity
from personalization.people.personal_data import Subject, location, subject_merge
from tests.factories import events_post, external_experience_make, project_make

NOW = datetime.now(UTC).replace(microsecond=0)
EVENTS, EXPOSURES = "personalization_event", "personalization_exposure"


def drain_all() -> int:
    total = 0
    while moved := services.events_drain(claim_idle_ms=0):
        total += moved
    return total


def history_send(project_id: int, events: list[dict]) -> None:
    """As the history import sends old events: through the stream, any age."""
    result = services.events_ingest(project_id=project_id, payload={"events": events}, max_past=None, live=False)
    assert len(result.accepted) == len(events), result


def stored_in(table: str, **where) -> list[str]:
    """The partitions holding the rows."""
    model = Event if table == EVENTS else Exposure
    ids = list(model.objects.filter(**where).values_list("id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE id = ANY(%s) ORDER BY 1", [ids])
        return [name for (name,) in cursor.fetchall()]


def page_view(event_id: str, visitor: str, ts: datetime, url: str = "/") -> dict:
    return {"event_id": event_id, "type": "page_view", "anonymous_id": visitor, "timestamp": ts.isoformat(),
            "properties": {"url": url}}  # fmt: skip


@pytest.mark.django_db
def test_drain__same_event_id_again_with_a_timestamp_a_month_earlier__stored_once(client, project, public_key):
    recent, month_before = NOW - timedelta(hours=1), NOW - timedelta(hours=1, days=40)
    assert month_floor(recent) != month_floor(month_before)
    response = events_post(client, public_key, [page_view("e1", "v1", recent, "/first")])
    assert response.status_code == 200, response.content
    assert drain_all() == 1
    # The same id again, 40 days earlier (another month, so another partition): an import of a
    # history that holds an event the site already sent, next to one that is new.
    history_send(project.pk, [page_view("e1", "v1", month_before, "/again"), page_view("e2", "v1", month_before)])
    assert drain_all() == 2

    stored = dict(Event.objects.filter(project=project).values_list("event_id", "properties__url"))
    assert stored == {"e1": "/first", "e2": "/"}
    assert Event.objects.get(event_id="e1").ts == recent
    assert stored_in(EVENTS, event_id="e1") == [partition_name(EVENTS, month_floor(recent))]
    claims = set(EventClaim.objects.filter(project=project).values_list("event_id", "ts"))
    assert claims == {("e1", recent), ("e2", month_before)}


@pytest.mark.django_db
def test_drain__second_exposure_a_month_later__first_one_kept(project, public_key):
    external_experience_make(project=project, key="spring_email")
    exposure = {"type": "exposure", "anonymous_id": "v1", "properties": {"experience": "spring_email", "variant": "b"}}
    first, later = NOW - timedelta(days=45), NOW - timedelta(days=2)
    history_send(project.pk, [{**exposure, "event_id": "x1", "timestamp": first.isoformat()}])
    assert drain_all() == 1
    history_send(project.pk, [{**exposure, "event_id": "x2", "timestamp": later.isoformat()}])
    assert drain_all() == 1

    assert list(Exposure.objects.filter(project=project).values_list("exposed_at", flat=True)) == [first]
    profile = Profile.objects.get(project=project)
    assert list(ExposureClaim.objects.values_list("profile_id", "experience_key")) == [(profile.pk, "spring_email")]


@pytest.mark.django_db
def test_merge__exposures_move__claims_follow_the_surviving_profile(project):
    external_experience_make(project=project, key="hero")
    external_experience_make(project=project, key="banner")

    def shown(event_id: str, unit: dict, days: int, experience: str, variant: str) -> dict:
        return {"event_id": event_id, "type": "exposure", **unit, "timestamp": (NOW - timedelta(days=days)).isoformat(),
                "properties": {"experience": experience, "variant": variant}}  # fmt: skip

    history_send(
        project.pk,
        [
            shown("a", {"anonymous_id": "anon"}, 3, "hero", "b"),
            shown("b", {"user_id": "known"}, 2, "hero", "a"),
            shown("c", {"user_id": "known"}, 2, "banner", "a"),
        ],
    )
    assert drain_all() == 3
    anonymous = Profile.objects.get(project=project, external_id__isnull=True)
    known = Profile.objects.get(project=project, external_id="known")

    subject_merge(source=anonymous.pk, target=known.pk)

    # The anonymous exposure to "hero" was the earlier one: it is the one kept, now the known person's.
    kept = set(Exposure.objects.filter(project=project).values_list("profile_id", "experience_key", "variant_key"))
    assert kept == {(known.pk, "hero", "b"), (known.pk, "banner", "a")}
    claims = set(ExposureClaim.objects.filter(project=project).values_list("profile_id", "experience_key"))
    assert claims == {(known.pk, "hero"), (known.pk, "banner")}


@pytest.mark.django_db
def test_claims__export_and_erasure__found_through_the_person_and_gone_after(project, public_key, client):
    external_experience_make(project=project, key="hero")
    events = [page_view("mine-1", "me", NOW - timedelta(hours=2)), page_view("theirs", "them", NOW)]
    events.append({"event_id": "mine-2", "type": "exposure", "anonymous_id": "me", "timestamp": NOW.isoformat(),
                   "properties": {"experience": "hero", "variant": "a"}})  # fmt: skip
    assert events_post(client, public_key, events).status_code == 200
    assert drain_all() == 3
    me = Profile.objects.get(project=project, identities__value="me")
    subject = Subject(project_id=project.pk, profile_ids=(me.pk,), unit_ids=("me",))
    event_claims, exposure_claims = location("event_claims"), location("exposure_claims")

    # The exposure is stored as an exposure, not as an event: its claim is the exposure's.
    assert [row["event_id"] for row in event_claims.export(subject)] == ["mine-1"]
    assert list(exposure_claims.export(subject)) == [{"experience_key": "hero"}]
    progress = []
    assert event_claims.erase(subject, progress.append) == 1
    assert exposure_claims.erase(subject, progress.append) == 1

    assert (event_claims.verify(subject), exposure_claims.verify(subject), progress) == (0, 0, [1, 1])
    assert list(EventClaim.objects.filter(project=project).values_list("event_id", flat=True)) == ["theirs"]


@pytest.mark.django_db
def test_partitions_ensure__coming_months_made_once__rows_waiting_in_default_moved_into_theirs(project):
    # Months ahead of any the migration made: the task run half a year from now.
    later = month_add(month_floor(NOW), 6)
    stray = month_add(month_floor(NOW), -14)  # an old import's month, which no partition covers
    history_send(project.pk, [page_view("old", "v1", stray + timedelta(days=3))])
    assert drain_all() == 1
    assert stored_in(EVENTS, event_id="old") == [f"{EVENTS}_default"]

    created = services.partitions_ensure(now=later)

    expected = {partition_name(table, month_add(later, n)) for table in (EVENTS, EXPOSURES) for n in range(4)}
    assert expected | {partition_name(EVENTS, stray)} == set(created)
    assert stored_in(EVENTS, event_id="old") == [partition_name(EVENTS, stray)]
    assert services.partitions_ensure(now=later) == []
    # The moved row is read through the parent as before, by Django's id.
    assert Event.objects.get(pk=Event.objects.get(event_id="old").pk).event_id == "old"


@pytest.mark.django_db
def test_retention__months_every_project_is_done_with_dropped__the_rest_deleted_row_by_row(project):
    keeper = project_make(name="keeps everything")
    this_month = month_floor(NOW)
    old, middle = month_add(this_month, -13), month_add(this_month, -5)
    history_send(project.pk, [page_view(f"old-{n}", "a", old + timedelta(days=n)) for n in range(3)])
    history_send(project.pk, [page_view("middle", "a", middle + timedelta(days=1)), page_view("now", "a", NOW)])
    history_send(keeper.pk, [page_view("kept", "k", middle + timedelta(days=2))])
    assert drain_all() == 6
    services.partitions_ensure()  # the old months out of the DEFAULT partition, as the daily task does
    cutoff = NOW - timedelta(days=60)

    # The keeper has no retention (not in the cut-offs): the month it has rows in stays.
    done = services.events_retention_apply(cutoffs={project.pk: cutoff})

    assert done.dropped == [partition_name(EVENTS, old)]
    assert done.deleted == {project.pk: 4}
    assert partition_name(EVENTS, old) not in {month.name for month in partitions_list(table=EVENTS)}
    assert set(Event.objects.values_list("event_id", flat=True)) == {"now", "kept"}
    # The claims went with their events, the dropped month's and the row-deleted one's alike.
    assert set(EventClaim.objects.values_list("event_id", flat=True)) == {"now", "kept"}
    # A second run finds nothing left to do.
    again = services.events_retention_apply(cutoffs={project.pk: cutoff})
    assert (again.dropped, again.deleted) == ([], {project.pk: 0})
    # Still once per id for the events that remain; an id whose event retention deleted is new again.
    history_send(project.pk, [page_view("now", "a", NOW - timedelta(days=1)), page_view("old-1", "a", NOW)])
    assert drain_all() == 2
    stored = set(Event.objects.filter(project=project).values_list("event_id", "ts"))
    assert stored == {("now", NOW), ("old-1", NOW)}


@pytest.mark.django_db
def test_exposure_retention__old_months_dropped_with_their_claims__a_person_shown_again_counts_anew(project):
    keeper = project_make(name="keeps everything")
    for owner in (project, keeper):
        external_experience_make(project=owner, key="hero")
    this_month = month_floor(NOW)
    old, middle = month_add(this_month, -13), month_add(this_month, -5)

    def shown(visitor: str, at: datetime) -> dict:
        return {"event_id": f"x-{visitor}-{at:%Y%m%d%H}", "type": "exposure", "anonymous_id": visitor,
                "timestamp": at.isoformat(), "properties": {"experience": "hero", "variant": "b"}}  # fmt: skip

    history_send(project.pk, [shown(f"old-{n}", old + timedelta(days=n)) for n in range(3)])
    history_send(project.pk, [shown("middle", middle + timedelta(days=1)), shown("recent", NOW)])
    history_send(keeper.pk, [shown("kept", middle + timedelta(days=2))])
    assert drain_all() == 6
    services.partitions_ensure()
    cutoff = NOW - timedelta(days=60)

    done = services.exposures_retention_apply(cutoffs={project.pk: cutoff})

    assert done.dropped == [partition_name(EXPOSURES, old)]
    assert done.deleted == {project.pk: 4}
    left = {"recent", "kept"}
    people = dict(ProfileIdentity.objects.filter(value__in=left).values_list("profile_id", "value"))
    assert {people.get(pid) for pid in Exposure.objects.values_list("profile_id", flat=True)} == left
    assert {people.get(pid) for pid in ExposureClaim.objects.values_list("profile_id", flat=True)} == left
    assert services.exposures_retention_apply(cutoffs={project.pk: cutoff}).deleted == {project.pk: 0}
    # "recent" keeps its first exposure; "old-0", whose exposure retention deleted, is exposed anew.
    history_send(project.pk, [shown("recent", NOW - timedelta(hours=1)), shown("old-0", NOW)])
    assert drain_all() == 2
    assert Exposure.objects.filter(project=project).count() == 2
    assert set(Exposure.objects.filter(project=project).values_list("exposed_at", flat=True)) == {NOW}


@pytest.mark.django_db
def test_bulk_load_then_the_drain__same_event_id_a_month_later__stored_once(project):
    loaded = services.history_bulk_load(
        project_id=project.pk,
        profiles=[services.HistoryProfile("v1")],
        events=[services.HistoryEvent(0, "h1", "page_view", NOW - timedelta(days=40), properties={"url": "/old"})],
    )
    assert loaded.events == 1
    # The loader wrote no claim itself: the events table's trigger did, for every way in.
    assert list(EventClaim.objects.filter(project=project).values_list("event_id", flat=True)) == ["h1"]

    history_send(project.pk, [page_view("h1", "v1", NOW - timedelta(hours=1), "/new"), page_view("h2", "v1", NOW)])
    assert drain_all() == 2

    stored = dict(Event.objects.filter(project=project).values_list("event_id", "properties__url"))
    assert stored == {"h1": "/old", "h2": "/"}
