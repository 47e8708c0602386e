"""The drain checks what its rows point at once per batch (services/profiles.py references_lock) instead
of PostgreSQL's per-row foreign key checks: it must fail as those would, and deletes keep their checks."""

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction

from personalization import services
from personalization.models import Event, Profile, ProfileIdentity
from personalization.people.profiles import _IDENTITIES_SQL, newest_stamps, references_lock
from tests.factories import event_make


def _profile(project, name: str) -> Profile:
    now = datetime.now(UTC)
    return Profile.objects.create(project=project, external_id=name, first_seen=now, last_seen=now)


@pytest.mark.django_db
def test_references_lock__a_profile_gone__fails_as_the_row_check_would_so_the_drain_retries(project):
    kept, gone = _profile(project, "kept"), _profile(project, "gone")
    gone_id = gone.pk
    gone.delete()
    with connection.cursor() as cursor:
        references_lock(cursor, project_id=project.pk, profile_ids=[kept.pk])  # all there: no error
        with pytest.raises(IntegrityError) as refused, transaction.atomic():
            references_lock(cursor, project_id=project.pk, profile_ids=[kept.pk, gone_id])
    # _events_write retries on this SQLSTATE, as it did when the deferred row check failed at commit.
    assert refused.value.__cause__.sqlstate == "23503"


@pytest.mark.django_db(transaction=True)
def test_drain__then_a_profile_deleted_under_its_events__the_delete_is_still_refused(project):
    services.events_ingest(
        project_id=project.pk,
        payload={"events": [event_make(n, anonymous_id="visitor", user_id="u-1") for n in range(3)]},
    )
    assert services.events_drain() == 3
    profile = Profile.objects.get(project=project, external_id="u-1")
    assert Event.objects.filter(profile=profile).count() == 3
    assert set(ProfileIdentity.objects.filter(profile=profile).values_list("kind", "value")) == {
        ("user", "u-1"),
        ("anon", "visitor"),
    }
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM personalization_profileidentity WHERE profile_id = %s", [profile.pk])
        cursor.execute("DELETE FROM personalization_profile WHERE id = %s", [profile.pk])
    assert Event.objects.filter(profile=profile).count() == 3
    assert Profile.objects.filter(pk=profile.pk).exists()


def _people_insert(cursor, project_id: int, count: int) -> None:
    cursor.execute(
        "INSERT INTO personalization_profile (project_id, external_id, attributes, consent, do_not_personalize,"
        " first_seen, last_seen) SELECT %s, 'user-' || n, '{}', '{}', false, now(), now()"
        " FROM generate_series(1, %s) n",
        [project_id, count],
    )
    cursor.execute(
        "INSERT INTO personalization_profileidentity (project_id, profile_id, kind, value, created_at)"
        " SELECT project_id, id, kind, kind || '-' || id, now() FROM personalization_profile,"
        " (VALUES ('user'), ('anon')) k(kind) WHERE project_id = %s",
        [project_id],
    )


@pytest.mark.django_db
def test_identities_lookup__a_project_the_statistics_do_not_know_yet__index_probes_not_a_scan(project, other_project):
    """A freshly imported project: its people are in the table, the planner's statistics (taken when
    another project filled it) know nothing of them. The drain's lookup of a batch's ids must still
    probe (project, kind, value) per id, not read the project's every identity and filter them, which
    the old single-column project index invited (seconds per batch at 300k people)."""
    with connection.cursor() as cursor:
        _people_insert(cursor, other_project.pk, 20_000)
        cursor.execute("ANALYZE personalization_profile, personalization_profileidentity")
        _people_insert(cursor, project.pk, 20_000)
        batch = [project.pk, "user", ["user-1", "user-2"], project.pk, "anon", ["anon-1", "anon-2"]]
        cursor.execute(f"EXPLAIN {_IDENTITIES_SQL} UNION ALL {_IDENTITIES_SQL}", batch)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert plan.count("Index Scan using identity_unique_value on personalization_profileidentity") == 2, plan
    assert plan.count("AND ((value)::text = ANY") == 2 and "Filter" not in plan, plan


def test_newest_stamps__utc_text_or_mixed_offsets__the_latest_instant_per_key():
    # All in UTC: compared as text, a whole second before the same second with a fraction.
    utc = [(1, "2026-12-01T12:00:00+00:00"), (1, "2026-12-01T12:00:00.500000+00:00"), (2, "2026-11-30T23:59:59+00:00")]
    assert newest_stamps(utc) == {1: "2026-12-01T12:00:00.500000+00:00", 2: "2026-11-30T23:59:59+00:00"}
    # One other offset among them: 13:30+02:00 is 11:30 UTC, earlier than 12:00 UTC though it reads later.
    mixed = [(1, "2026-12-01T12:00:00+00:00"), (1, "2026-12-01T13:30:00+02:00"), (2, "2026-12-01T13:30:00+02:00")]
    assert newest_stamps(mixed) == {1: "2026-12-01T12:00:00+00:00", 2: "2026-12-01T13:30:00+02:00"}
    assert newest_stamps([]) == {}
