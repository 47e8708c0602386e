"""Issue 9: infrastructure faults, against real servers that the tests stop and start.

- Redis stopped while decide and events serve: decide answers from its snapshot (reason
  `fallback`), events answer 503 with Retry-After and leave nothing half written; both recover
  by themselves when Redis is back.
- PostgreSQL stopped: decide keeps answering (even past the key cache), events are accepted into
  the stream, a drain fails without losing anything, and once PostgreSQL is back every event is
  stored exactly once.
- The real server (granian, as production runs it) reads chunked bodies and answers 413 as JSON.

The PostgreSQL test runs its own cluster (a data folder under var/, a free port), started and
stopped with config.embedded, and its own decide server and drain processes.
"""

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg
import pytest
from django.conf import settings

from personalization import redis_client, rkeys
from personalization.decide import runtime as decide_runtime
from tests.factories import event_make, events_post
from tests.personalization.conftest import free_port
from tests.personalization.test_decide import make_experience, post_decide

ROOT = Path(__file__).resolve().parents[2]
KEY_CACHE_SECONDS = 1.0
sys.path.insert(0, str(ROOT))
from bench import _common  # noqa: E402


def queued_event_ids() -> set[str]:
    """Ids of the behaviour events waiting in the stream (decide's exposures aside)."""
    entries = redis_client.worker().xrange(rkeys.EVENTS_STREAM)
    return {e["event_id"] for _, f in entries for e in orjson.loads(f[b"d"]) if e["type"] != "exposure"}


@pytest.mark.django_db
def test_redis_stopped__decide_falls_back_events_503__both_recover_nothing_half_written(
    client, project, public_key, own_redis
):
    state, start = own_redis
    make_experience(project)
    assert post_decide(client, public_key, {"anonymous_id": "r1"})[0] == 200
    assert events_post(client, public_key, [event_make(i) for i in range(10)]).status_code == 200
    decide_runtime.buffer.flush()
    before = queued_event_ids()
    assert len(before) == 10

    state["proc"].send_signal(signal.SIGKILL)
    state["proc"].wait()
    status, answer = post_decide(client, public_key, {"anonymous_id": "r2"})
    assert status == 200 and answer["assignments"]["hero"]["reason"] == "fallback"
    refused = events_post(client, public_key, [event_make(i) for i in range(10, 20)])
    assert refused.status_code == 503
    assert refused["Retry-After"] == "2" and refused["Access-Control-Allow-Origin"] == "*"
    assert "retry" in refused.json()["error"]["message"]

    state["proc"] = start()
    redis_client.reset()
    assert queued_event_ids() == before, "the refused batch left nothing behind"
    time.sleep(decide_runtime.REDIS_RETRY_SECONDS + 0.1)
    status, answer = post_decide(client, public_key, {"anonymous_id": "r3"})
    assert status == 200 and answer["assignments"]["hero"]["reason"] != "fallback"
    assert events_post(client, public_key, [event_make(i) for i in range(10, 20)]).status_code == 200
    assert queued_event_ids() == before | {f"ev-{i}" for i in range(10, 20)}


# --- PostgreSQL stopped, against a stack of real processes ---------------------------------------


class Stack:
    """Its own PostgreSQL cluster, a decide server (granian) and drains, on the test Redis database."""

    def __init__(self, var: Path):
        self.var, self.pg_port, self.http_port = var, free_port(), free_port()
        self.database_url = f"postgres://postgres@127.0.0.1:{self.pg_port}/kairos"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "KAIROS_VAR_DIR": str(var),
            "KAIROS_PG_PORT": str(self.pg_port),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": settings.REDIS_URL,  # the tests' Redis database, emptied by every test
            "KAIROS_LOG_LEVEL": "WARNING",
            "KAIROS_DECIDE_CPU_PINNING": "0",
            # The server's key cache lasts 1 s, not 10: the test waits past it with PostgreSQL away.
            "KAIROS_KEY_CACHE_MS": str(int(KEY_CACHE_SECONDS * 1000)),
        }
        self.server: subprocess.Popen | None = None
        self.key = ""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=check, timeout=600
        )

    def pg(self, action: str) -> None:
        # Without DATABASE_URL config.embedded manages the cluster; REDIS_URL keeps it off Redis.
        env = {k: v for k, v in self.env.items() if k != "DATABASE_URL"}
        subprocess.run([sys.executable, "-m", "config.embedded", action], cwd=ROOT, env=env, check=True, timeout=300)

    def cluster_up(self) -> None:
        self.pg("start")
        self.run("manage.py", "migrate", "--noinput", "-v", "0")

    def serve(self) -> None:
        """A key (published to the test Redis database, which every test starts empty) and the server."""
        self.key = self.shell(
            "from personalization import services\n"
            "from personalization.models import Project\n"
            "p = Project.objects.filter(slug='faults').first()\n"
            "p = p or services.project_create(name='Faults', slug='faults')\n"
            "_, raw = services.api_key_create(project=p, kind='public', name='site')\n"
            "print(raw)"
        )
        self.server = _common.server_start(self.http_port, 1, 2, env=self.env)

    def shell(self, code: str) -> str:
        return self.run("manage.py", "shell", "-c", code).stdout.strip().splitlines()[-1]

    def post(self, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {self.key}", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, orjson.loads(raw) if raw else {}

    def decide(self, unit: str) -> tuple[int, dict]:
        status, _, body = self.post("/api/v1/decide", orjson.dumps({"anonymous_id": unit}))
        return status, body

    def events(self, ids: range, tag: str) -> int:
        events = [event_make(i, event_id=f"{tag}-{i}") for i in ids]
        return self.post("/api/v1/events", orjson.dumps({"events": events}))[0]

    def stored(self) -> tuple[int, int]:
        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://")) as conn:
            row = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM personalization_event").fetchone()
        return row[0], row[1]

    def cluster_down(self) -> None:
        self.pg("stop")
        shutil.rmtree(self.var, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """The module's own PostgreSQL cluster, migrated once (an initdb and a migrate take tens of seconds)."""
    s = Stack(ROOT / "var" / f"test-faults-{os.getpid()}")
    try:
        s.cluster_up()
        yield s
    finally:
        s.cluster_down()


@pytest.fixture
def stack(cluster):
    """The module's cluster, with a key and a decide server of this test's own."""
    cluster.serve()
    try:
        yield cluster
    finally:
        _common.process_stop(cluster.server)


@pytest.mark.slow
def test_real_server__chunked_body_read__oversized_bodies_413_json_with_cors(stack):
    events = orjson.dumps({"events": [event_make(i) for i in range(40)]})

    def chunks():
        for start in range(0, len(events), 1000):
            yield events[start : start + 1000]

    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
    conn.request(
        "POST",
        "/api/v1/events",
        body=chunks(),
        headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert orjson.loads(response.read())["accepted"] == 40

    for megabytes in (5, 50):
        big = b'{"events": ["' + b"x" * (megabytes * 1_000_000) + b'"]}'
        status, headers, body = stack.post("/api/v1/events", big)
        assert status == 413 and headers["access-control-allow-origin"] == "*"
        assert headers["content-type"] == "application/json" and body["error"]["field"] == "body"


@pytest.mark.slow
def test_postgres_stopped__decide_answers_events_wait__drained_exactly_once_when_back(stack):
    stack.shell(
        "from personalization import services\n"
        "from personalization.models import Project\n"
        "p = Project.objects.get(slug='faults')\n"
        "v = [{'key': f'v{i}', 'name': f'V{i}', 'payload': {'n': i}, 'is_control': i == 0} for i in range(2)]\n"
        "e = services.experience_create(project=p, key='hero', name='Hero', touchpoint='hero', variants=v)\n"
        "services.experience_start(experience=e)\n"
        "services.snapshot_publish(project_id=p.pk)\n"
        "print('ok')"
    )
    status, answer = stack.decide("before")
    assert status == 200 and answer["assignments"]["hero"]["variant"] in {"v0", "v1"}
    assert stack.events(range(0, 25), "before") == 200

    stack.pg("stop")
    time.sleep(KEY_CACHE_SECONDS + 0.5)  # past the key cache: the key is checked again, in Redis (published there)
    for n in range(5):
        status, answer = stack.decide(f"during-{n}")
        assert status == 200, answer
        assert answer["assignments"]["hero"]["variant"] in {"v0", "v1"}
    assert stack.events(range(0, 25), "during") == 200, "accepted into the stream while PostgreSQL is away"
    failed = stack.run("manage.py", "events_drain", "--once", "--claim-idle-ms", "0", check=False)
    assert failed.returncode != 0, "the drain cannot write and says so"
    stream = redis_client.worker()
    assert stream.xlen(rkeys.EVENTS_STREAM) >= 2, "nothing was acknowledged"

    stack.pg("start")
    drained = stack.run("manage.py", "events_drain", "--once", "--claim-idle-ms", "0")
    assert "drained" in drained.stdout
    assert stack.stored() == (50, 50)
    again = stack.run("manage.py", "events_drain", "--once", "--claim-idle-ms", "0")
    assert again.stdout.strip() == "drained 0 events"
    assert stack.stored() == (50, 50), "exactly once"
    assert stream.xlen(rkeys.EVENTS_STREAM) == 0
