"""The bulk history load (personalization/ingest/bulk.py) and the services a loaded history needs."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import IntegrityError, connection

from personalization import redis_client, rkeys, selectors, services
from personalization.decide import engine
from personalization.models import AuditEntry, Event, Experience, Exposure, Profile, ProfileIdentity
from personalization.services import HistoryEvent, HistoryExposure, HistoryProfile

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _event(profile: int, n: int, minutes: int, **fields) -> HistoryEvent:
    return HistoryEvent(profile, f"e{n}", fields.pop("type", "page_view"), T0 + timedelta(minutes=minutes), **fields)


def _experience(project, key: str = "hero"):
    variants = [{"key": "control", "is_control": True}, {"key": "bold"}]
    return services.experience_create(project=project, key=key, name=key, touchpoint="home", variants=variants)


@pytest.mark.django_db
def test_history_bulk_load__profiles_events_exposures__stored_as_the_drain_would(project):
    profiles = [
        HistoryProfile("anon-a", external_id="user-a", attributes={"plan": "pro"}, consent={"personalization": True}),
        HistoryProfile("anon-b"),
        HistoryProfile(None, external_id="user-c", first_seen=T0, last_seen=T0 + timedelta(days=1)),
    ]
    events = [
        _event(0, 1, 30, properties={"path": "/"}),
        _event(1, 2, 5),
        _event(0, 3, 0, session_id="s1"),
        _event(0, 4, 90, type="purchase", value=12.5, received_at=T0 + timedelta(hours=2)),
    ]
    exposures = [
        HistoryExposure(0, "hero", "bold", "variant", T0, reason="fixed_split", converted=True, conversions=1),
        HistoryExposure(1, "hero", "control", "holdout_global", T0 + timedelta(minutes=5), revenue=3.0),
    ]

    loaded = services.history_bulk_load(
        project_id=project.pk, profiles=profiles, events=iter(events), exposures=exposures
    )

    assert (loaded.events, loaded.identities, loaded.exposures) == (4, 4, 2)
    assert selectors.project_history_counts(project_id=project.pk) == {"profiles": 3, "events": 4, "exposures": 2}
    a, b, c = (Profile.objects.get(pk=pk) for pk in loaded.profile_ids)
    # first/last seen follow the events when not given, and are kept when given
    assert (a.first_seen, a.last_seen) == (T0, T0 + timedelta(minutes=90))
    assert (b.first_seen, b.last_seen) == (T0 + timedelta(minutes=5),) * 2
    assert (c.first_seen, c.last_seen) == (T0, T0 + timedelta(days=1))
    assert (a.external_id, a.attributes, a.consent) == ("user-a", {"plan": "pro"}, {"personalization": True})
    assert (b.external_id, b.attributes, b.consent) == (None, {}, {})
    identities = set(ProfileIdentity.objects.filter(project=project).values_list("profile_id", "kind", "value"))
    assert identities == {(a.pk, "anon", "anon-a"), (a.pk, "user", "user-a"), (b.pk, "anon", "anon-b"),
                          (c.pk, "user", "user-c")}  # fmt: skip
    assert ProfileIdentity.objects.get(value="anon-a").created_at == T0
    purchase = Event.objects.get(project=project, event_id="e4")
    assert (purchase.profile_id, float(purchase.value), purchase.received_at) == (a.pk, 12.5, T0 + timedelta(hours=2))
    first = Event.objects.get(project=project, event_id="e1")
    assert (first.properties, first.received_at, first.session_id) == ({"path": "/"}, first.ts, "")
    rows = {x.profile_id: x for x in Exposure.objects.filter(project=project)}
    assert (rows[a.pk].variant_key, rows[a.pk].arm, rows[a.pk].converted, rows[a.pk].goal) == (
        "bold", "variant", True, "purchase")  # fmt: skip
    assert (rows[b.pk].arm, rows[b.pk].revenue, rows[b.pk].window_hours, rows[b.pk].source) == (
        "holdout_global", 3.0, 72, "decide")  # fmt: skip
    # Statistics analysed in the load's own transaction, so the first reads are planned with these rows.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT concat(histogram_bounds::text, most_common_vals::text) FROM pg_stats"
            " WHERE tablename = 'personalization_event' AND attname = 'event_id'"
        )
        assert "e4" in cursor.fetchone()[0]


@pytest.mark.django_db
def test_history_bulk_load__row_names_no_profile__nothing_written(project):
    profiles = [HistoryProfile("anon-a")]
    with pytest.raises(ValueError, match=r"events\[1\]\.profile: -1 is not a position"):
        services.history_bulk_load(project_id=project.pk, profiles=profiles, events=[_event(0, 1, 0), _event(-1, 2, 0)])
    with pytest.raises(ValueError, match=r"exposures\[0\]\.profile: 1 is not a position"):
        services.history_bulk_load(
            project_id=project.pk,
            profiles=profiles,
            events=[_event(0, 1, 0)],
            exposures=[HistoryExposure(1, "hero", "bold", "variant", T0)],
        )
    with pytest.raises(ValueError, match=r"profiles\[1\]\.first_seen: the profile has no events"):
        services.history_bulk_load(
            project_id=project.pk, profiles=[*profiles, HistoryProfile("anon-b")], events=[_event(0, 1, 0)]
        )
    assert selectors.project_history_counts(project_id=project.pk) == {"profiles": 0, "events": 0, "exposures": 0}
    assert not ProfileIdentity.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_history_bulk_load__duplicate_event_id__whole_load_rolled_back(project):
    profiles = [HistoryProfile("anon-a"), HistoryProfile("anon-b")]
    with pytest.raises(psycopg.errors.UniqueViolation):
        services.history_bulk_load(project_id=project.pk, profiles=profiles, events=[_event(0, 1, 0), _event(1, 1, 5)])
    assert selectors.project_history_counts(project_id=project.pk) == {"profiles": 0, "events": 0, "exposures": 0}


@pytest.mark.django_db
def test_history_bulk_load__missing_project__refused_and_checks_back_on_after_a_load(project):
    with pytest.raises(IntegrityError, match="project"):
        services.history_bulk_load(
            project_id=project.pk + 1000, profiles=[HistoryProfile("a")], events=[_event(0, 1, 0)]
        )
    assert not Event.objects.filter(event_id="e1").exists()
    services.history_bulk_load(project_id=project.pk, profiles=[HistoryProfile("a")], events=[_event(0, 1, 0)])
    # The rest of the caller's transaction has its foreign key checks again.
    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        assert cursor.fetchone()[0] == "origin"


@pytest.mark.django_db
def test_unit_assignments_publish__history_arms__decide_keeps_them(project):
    services.unit_assignments_publish(
        project_id=project.pk,
        assignments=[
            ("d1", "hero", "variant", "bold"),
            ("d1", "popup", "holdout_experience", "control"),
            ("d2", "hero", "holdout_global", "control"),
        ],
    )
    client = redis_client.worker()
    assert client.hgetall(rkeys.unit(project.pk, "d1")) == {
        b"a:hero": b"bold",
        b"a:popup": engine.HOLDOUT_EXPERIENCE_MARK.encode(),
    }
    assert client.hgetall(rkeys.unit(project.pk, "d2")) == {b"a:hero": engine.HOLDOUT_GLOBAL_MARK.encode()}
    assert client.ttl(rkeys.unit(project.pk, "d2")) > 0


@pytest.mark.django_db
def test_history_services__salts_and_start__only_while_no_visitor_moves(project):
    experience = _experience(project)
    experience = services.experience_salt_set(experience=experience, salt="from-other-tool")
    project = services.project_holdout_salt_set(project=project, salt="holdout-from-other-tool")
    with pytest.raises(services.ExperienceError, match="started_at: the experience has not started"):
        services.experience_started_at_set(experience=experience, started_at=T0)
    experience = services.experience_start(experience=experience)

    with pytest.raises(services.ExperienceError, match="salt: can only be set on a draft"):
        services.experience_salt_set(experience=experience, salt="other")
    with pytest.raises(services.ExperienceError, match="salt: can only be set before"):
        services.project_holdout_salt_set(project=project, salt="other")
    with pytest.raises(services.ExperienceError, match="salt: must be text of 1 to 32"):
        services.experience_salt_set(experience=_experience(project, "popup"), salt="x" * 33)
    with pytest.raises(services.ExperienceError, match="started_at: must be a timezone-aware time"):
        services.experience_started_at_set(experience=experience, started_at=datetime.now(UTC) + timedelta(hours=1))
    services.experience_started_at_set(experience=experience, started_at=T0)

    stored = Experience.objects.get(pk=experience.pk)
    project.refresh_from_db()
    assert (stored.salt, stored.started_at, project.holdout_salt) == ("from-other-tool", T0, "holdout-from-other-tool")
    changes = list(AuditEntry.objects.filter(project=project, action="update").values_list("changes", flat=True))
    assert {"salt": "set"} in changes and {"holdout_salt": "set"} in changes
    assert any("started_at" in change for change in changes)
