from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from demo import seed as demo_services
from personalization import services as personalization_services
from personalization.models import ProfileIdentity, Project
from segments import services as segments_services
from tests.seeded import demo_seed_cached, state_cached

# Today at midnight: recent enough for the 30-day behavior window, fixed within a test session.
DEMO_END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
# Visitors of the demo for tests of a flow (what a killed job leaves behind, who is taken out or moved), not of
# how well segments or scores are found: at 400 the demo still has the walking, yoga and trail segments at k=8,
# plus-plan members and people with an intent, at about a third of the cost of 1,500 for every refit, run or
# job. Not for scores: whether a model is promoted there depends on the run's id (bootstrap seed). One size for
# all of them, so they share cached states (tests/seeded.py).
FLOW_PROFILES = 400


@pytest.fixture
def demo_project(db, tmp_path):
    """The demo shop with 3,000 visitors over 14 days: raw events, planted intents kept aside."""
    return demo_seed_cached(profiles=3000, days=14, seed=11, keys_path=tmp_path / "keys.json", end=DEMO_END)


@pytest.fixture
def demo_small(db, tmp_path):
    """The demo shop with 1,500 visitors, for tests of a flow (who is taken out, who moves), not of how
    well segments are found: the walking, yoga and trail segments are there at k=8 all the same."""
    return demo_seed_cached(profiles=1500, days=14, seed=11, keys_path=tmp_path / "keys.json", end=DEMO_END)


@pytest.fixture
def demo_flow(db, tmp_path):
    """The demo shop with FLOW_PROFILES visitors (see there), for tests of who is taken out or moved."""
    return demo_seed_cached(profiles=FLOW_PROFILES, days=14, seed=11, keys_path=tmp_path / "k.json", end=DEMO_END)


@pytest.fixture(scope="module")
def demo_refitted_module(django_db_setup, django_db_blocker, tmp_path_factory):
    """demo_project with its embedder fitted, seeded and committed once for a module whose tests only
    read it: each test's own writes roll back with its transaction (plain `db` tests only). Seeding and
    fitting take most of such a test's time, so the module pays them once, not per test."""
    keys = tmp_path_factory.mktemp("demo") / "keys.json"

    def build() -> int:
        project = demo_seed_cached(profiles=3000, days=14, seed=11, keys_path=keys, end=DEMO_END)
        segments_services.embeddings_refit(project_id=project.pk, now=DEMO_END)
        return project.pk

    with django_db_blocker.unblock():
        project = state_cached(("demo-refitted", 3000, 14, 11, DEMO_END), build, _project_get)
    yield project
    with django_db_blocker.unblock():
        demo_services.demo_delete()
        # Then emptied as after a transactional test: users, and caches no project owns (text vectors), which
        # made every later test asking for a cached state build it for real (HASROWS: ~10 s each).
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def refitted(demo_refitted_module, db):
    """The module's refitted demo (see demo_refitted_module), read fresh in this test's transaction."""
    return type(demo_refitted_module).objects.get(pk=demo_refitted_module.pk)


def _project_get(pk: int) -> Project:
    return Project.objects.get(pk=pk)


def profile_events_ingest(project, profile_id: int, etype: str, properties: list[dict], tag: str) -> None:
    """Events of the profile (its anonymous id) a second apart up to now, accepted but not drained yet."""
    unit = ProfileIdentity.objects.filter(profile_id=profile_id, kind="anon").values_list("value", flat=True).first()
    now = timezone.now()
    events = [
        {
            "event_id": f"{tag}-{i}",
            "type": etype,
            "anonymous_id": unit,
            "timestamp": (now - timedelta(seconds=len(properties) - i)).isoformat(),
            "properties": props,
        }
        for i, props in enumerate(properties)
    ]
    personalization_services.events_ingest(project_id=project.pk, payload={"events": events})


def yoga_events_ingest(project, profile_id: int, n: int = 60) -> None:
    """A minute of yoga browsing by the profile (its anonymous id), accepted but not drained yet."""
    yoga = {"url": "/c/yoga", "category": "yoga", "item": "cork-yoga-mat", "dwell_ms": 20_000}
    profile_events_ingest(project, profile_id, "page_view", [yoga] * n, "yoga")
