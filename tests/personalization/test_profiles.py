"""The drain checks what its rows point at once per batch (services/profiles.py references_lock) instead
of PostgreSQL's per-row foreign key checks: it must fail as those would, and deletes keep their checks."""

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction

from personalization import services
from personalization.models import Event, Profile, ProfileIdentity
from personalization.people.profiles import references_lock
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
