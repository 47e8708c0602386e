import os
import shutil
import tempfile

import pytest
from django.conf import settings

from personalization import redis_client
from personalization.decide import runtime as decide_runtime
from personalization.ingest import stream
from personalization.workspace import auth
from segments.services import embeddings as segments_embeddings
from segments.services import intents as segments_intents
from tests import db_flush, factories, static_scan
from tests.redis_cluster import redis_cluster_run

# After a transactional test, empty only the tables it wrote to (tests/db_flush.py).
db_flush.install()
# WhiteNoise's static file scan once per process, not once per test client (tests/static_scan.py).
static_scan.install()


def pytest_configure(config):
    """The run's directory of built states (tests/seeded.py), made by the main process before the xdist
    workers start, so that they inherit it and share what they build; removed when the run ends."""
    if hasattr(config, "workerinput") or os.environ.get("KAIROS_TEST_STATES_DIR"):
        return
    config.kairos_states_dir = tempfile.mkdtemp(prefix="kairos-test-states-")
    os.environ["KAIROS_TEST_STATES_DIR"] = config.kairos_states_dir


def pytest_unconfigure(config):
    made = getattr(config, "kairos_states_dir", None)
    if made:
        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("KAIROS_TEST_STATES_DIR", None)


@pytest.hookimpl(trylast=True)  # after pytest-django's own reordering (transactional tests last)
def pytest_collection_modifyitems(items):
    """The files with the most slow and browser tests first, each file's tests together.

    `make test` hands whole files to the two xdist workers, the next file to whichever is free
    (`--dist loadfile --no-loadscope-reorder`). A long file handed out last leaves one worker busy
    with it while the other has nothing left to do (the runner fault test, alone in its file, was
    among the last); handed out first, the many short files fill in around it. A slow test weighs
    as much as about three browser tests."""
    weight: dict[str, int] = {}
    first: dict[str, int] = {}
    for n, item in enumerate(items):
        path = item.nodeid.split("::")[0]
        slow, e2e = (item.get_closest_marker(name) is not None for name in ("slow", "e2e"))
        weight[path] = weight.get(path, 0) + 10 * slow + 3 * e2e
        first.setdefault(path, n)
    items.sort(key=lambda item: (-weight[path := item.nodeid.split("::")[0]], first[path]))


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
    # Caches keyed by row ids, which a test database reuses (a replayed state's rows keep the ids of the database
    # they were built in; a flush that resets sequences starts them again): a fitted embedder, intent models, and
    # the experiences the events endpoint checks exposures against (kept 5 s per project id).
    segments_embeddings._embedder_loaded.cache_clear()
    segments_intents._models_cached.cache_clear()
    stream._known.clear()
    yield
    redis_client.reset()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """The ports of a real three-node Redis Cluster, one per test module that asks (tests/redis_cluster.py)."""
    with redis_cluster_run(tmp_path_factory.mktemp("redis-cluster")) as ports:
        yield ports


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
