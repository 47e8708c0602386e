import pytest
from django.conf import settings

from personalization import redis_client
from personalization.decide import runtime as decide_runtime
from personalization.workspace import auth
from tests import factories


@pytest.fixture(autouse=True)
def clean_redis():
    """Every test starts with an empty test Redis database (never the demo's: see config.settings.test)."""
    assert not settings.REDIS_URL.endswith("/0"), "tests must run on their own Redis database, not the demo's"
    redis_client.reset()
    decide_runtime.buffer.flush()  # writes left over by an earlier test land before the wipe, not after
    redis_client.worker().flushdb()
    auth.cache_clear()
    decide_runtime.snapshots.by_project.clear()
    decide_runtime.key_rates.__init__()  # counts of an earlier test's keys
    decide_runtime._redis_down_until = 0.0
    yield
    redis_client.reset()


@pytest.fixture
def project(db):
    return factories.project_make(name="Shop A")


@pytest.fixture
def other_project(db):
    return factories.project_make(name="Shop B")


@pytest.fixture
def public_key(project):
    return factories.key_make(project=project, kind="public")


@pytest.fixture
def secret_key(project):
    return factories.key_make(project=project, kind="secret")
