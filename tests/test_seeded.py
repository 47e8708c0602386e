"""The test-state cache (tests/seeded.py) replays exactly what its build left behind."""

from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import connection

from personalization import redis_client
from personalization.models import Profile, Project
from tests import seeded
from tests.factories import project_make

END = datetime(2026, 11, 30, tzinfo=UTC)
SMALL = {"profiles": 40, "days": 2, "seed": 5, "end": END}


def _rows() -> dict[str, int]:
    counts = {}
    with connection.cursor() as cursor:
        for table in seeded._tables():
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            counts[table] = cursor.fetchone()[0]
    return counts


def _redis() -> dict[bytes, bytes]:
    client = redis_client.worker()
    return {key: client.dump(key) for key in client.scan_iter()}


@pytest.fixture(autouse=True)
def states_dir(tmp_path, monkeypatch):
    """A run directory of this test's own: what other tests built is not what this one checks."""
    monkeypatch.setenv("KAIROS_TEST_STATES_DIR", str(tmp_path / "states"))
    (tmp_path / "states").mkdir()
    return tmp_path / "states"


def _flush() -> None:
    call_command("flush", interactive=False, verbosity=0)
    redis_client.worker().flushdb()


@pytest.mark.django_db(transaction=True)
def test_demo_seed_cached__replayed_after_a_flush__same_rows_keys_and_file(tmp_path):
    # From an empty database: on a fresh clone an earlier test on this worker once left committed rows
    # (which one is not known yet), and the cache then rightly builds for real, uncached.
    _flush()
    seeded._states.clear()
    built = seeded.demo_seed_cached(keys_path=tmp_path / "a.json", **SMALL)
    rows, keys = _rows(), _redis()
    assert rows["personalization_event"] > 100 and len(keys) > 40

    _flush()
    assert Project.objects.count() == 0 and not redis_client.worker().dbsize()
    replayed = seeded.demo_seed_cached(keys_path=tmp_path / "b.json", **SMALL)
    assert replayed.pk == built.pk and isinstance(replayed, Project)
    assert _rows() == rows
    assert _redis() == keys
    assert (tmp_path / "b.json").read_text() == (tmp_path / "a.json").read_text()
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    # Ids handed out after the replay do not collide with replayed ones.
    assert project_make(name="After").pk > replayed.pk
    assert Profile.objects.filter(project=replayed).count() == SMALL["profiles"]


@pytest.mark.django_db(transaction=True)
def test_demo_seed_cached__built_by_another_worker__replayed_from_the_run_directory(tmp_path, states_dir, monkeypatch):
    _flush()
    seeded._states.clear()
    built = seeded.demo_seed_cached(keys_path=tmp_path / "a.json", **SMALL)
    rows, keys = _rows(), _redis()
    assert len(list(states_dir.glob("*.lock"))) == 1 and len(list(states_dir.iterdir())) == 2

    # Another worker: nothing in its memory, an empty database of its own; the build is not run again.
    _flush()
    seeded._states.clear()
    builds = []
    monkeypatch.setattr(seeded, "_demo_build", lambda *args: builds.append(args))
    replayed = seeded.demo_seed_cached(keys_path=tmp_path / "b.json", **SMALL)
    assert builds == []
    assert replayed.pk == built.pk and _rows() == rows and _redis() == keys
    assert (tmp_path / "b.json").read_text() == (tmp_path / "a.json").read_text()


@pytest.mark.django_db(transaction=True)
def test_demo_seed_cached__database_not_empty__builds_for_real(tmp_path):
    _flush()
    seeded._states.clear()
    seeded.demo_seed_cached(keys_path=tmp_path / "a.json", **SMALL)
    _flush()
    other = project_make(name="Already here")
    project = seeded.demo_seed_cached(keys_path=tmp_path / "b.json", **SMALL)
    assert project.pk > other.pk  # a new seed, not the replayed ids
    assert Project.objects.count() == 2
