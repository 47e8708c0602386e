"""Personalization's hooks: every provider is registered by the app that owns the answer, and a hook
no app registered fails safe and visibly (an error at startup; the drain stores nothing and loses
nothing; the snapshot is not compiled with made-up privacy settings; no segment key is accepted)."""

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from experiments.models import LiftReport, ReportStatus
from personalization import hooks, services
from personalization.models import Event
from personalization.people import personal_data
from personalization.segment_keys import behavior_key
from privacy.selectors import suppressed_among
from tests.factories import clustering_run_make, event_make, events_post, member_make, profiles_make


@pytest.fixture
def unregistered():
    """Take a hook's provider away for one test, as if its app were not installed; puts it back after."""
    taken = {}

    def take(hook: hooks.Provider) -> None:
        taken[hook] = hook.get()
        hook._provider = None

    yield take
    for hook, provider in taken.items():
        hook._provider = provider


def test_hooks__at_startup__each_registered_by_its_owner_and_the_check_is_clean():
    owners = {hook.name: getattr(hook.get(), "__module__", None) or hook.get().__name__ for hook in hooks.HOOKS}
    assert owners == {
        "suppression": "privacy.selectors",
        "decide_privacy": "privacy.selectors",
        "segment_catalog": "segments.selectors",
        "lift_headline": "experiments.apps",  # a wrapper that imports the selectors when first asked
        "person_why": "segments.why",
        "metric_definitions": "experiments.apps",  # a wrapper: metric_services loads personalization's services
    }
    assert hooks.hooks_check() == []


def test_hook__a_second_provider__refused():
    with pytest.raises(ImproperlyConfigured, match="already has a provider"):
        hooks.suppression.provide(lambda **kwargs: set())


def test_check__suppression_missing__an_error_naming_the_hook_and_the_app(unregistered):
    unregistered(hooks.suppression)
    errors = hooks.hooks_check()
    assert [e.id for e in errors] == ["personalization.E001"]
    assert "'suppression'" in errors[0].msg and "privacy" in errors[0].hint


@pytest.mark.django_db
def test_drain__suppression_missing__stores_nothing_and_keeps_the_events(client, project, public_key, unregistered):
    assert events_post(client, public_key, [event_make(n) for n in range(3)]).status_code == 200
    unregistered(hooks.suppression)
    with pytest.raises(hooks.HookMissing, match="suppression"):
        services.events_drain(claim_idle_ms=0)
    assert Event.objects.filter(project=project).count() == 0

    hooks.suppression.provide(suppressed_among)  # privacy is back
    while services.events_drain(claim_idle_ms=0):
        pass
    assert Event.objects.filter(project=project).count() == 3  # nothing was lost


@pytest.mark.django_db
def test_snapshot_compile__decide_privacy_missing__refuses(project, unregistered):
    unregistered(hooks.decide_privacy)
    with pytest.raises(hooks.HookMissing, match="decide_privacy"):
        services.snapshot_compile(project_id=project.pk)


@pytest.mark.django_db
def test_experience__segment_catalog_missing__segment_keys_refused(project, unregistered):
    run = clustering_run_make(project=project, members=[profiles_make(project=project, count=2)])
    key = behavior_key(run.pk, 0)

    def create(name: str):
        return services.experience_create(
            project=project,
            key=name,
            name=name,
            touchpoint="home",
            variants=[{"key": "control", "weight": 50, "is_control": True}, {"key": "b", "weight": 50}],
            targeting={"segments": [key]},
        )

    assert create("with-segments").targeting["segments"] == [key]  # segments' catalog knows the key
    unregistered(hooks.segment_catalog)
    with pytest.raises(services.ExperienceError) as error:
        create("without-segments")
    assert error.value.field == "targeting.segments"


@pytest.mark.django_db
def test_overview__experiments_missing__answers_without_the_headline(client, project, unregistered):
    end = timezone.now()
    LiftReport.objects.create(
        project=project,
        start=end - timedelta(days=14),
        end=end,
        span="days:14",
        status=ReportStatus.DONE,
        result={"empty": False, "sentences": ["Personalization added 0.41 points of conversion."]},
    )
    client.force_login(member_make(project=project, role="admin"))
    assert "Personalization added 0.41 points" in client.get("/").content.decode()  # with experiments
    unregistered(hooks.lift_headline)
    response = client.get("/")
    assert response.status_code == 200 and "Personalization added 0.41 points" not in response.content.decode()


def test_personal_data__order__stream_first_profile_after_what_points_at_it():
    names = [loc.name for loc in personal_data.locations()]
    assert names[0] == "pending_events"
    profile = names.index("profiles")
    pointing = ["events", "exposures", "dead_letters", "segment_memberships", "embeddings", "identities"]
    assert all(names.index(name) < profile for name in pointing)
    assert names.index("exposure_segments") < names.index("exposures")
    assert [loc.order for loc in personal_data.locations()] == sorted(loc.order for loc in personal_data.locations())
