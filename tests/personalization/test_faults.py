"""Issue 9: infrastructure faults, against real servers that the tests stop and start.

- Redis stopped while decide and events serve: decide answers from its snapshot (reason
  `fallback`), events answer 503 with Retry-After and leave nothing half written; both recover
  by themselves when Redis is back.
- PostgreSQL stopped: decide keeps answering (even past the key cache), events are accepted into
  the stream, a drain fails without losing anything, and once PostgreSQL is back every event is
  stored exactly once.
- The real server (granian, as production runs it) reads chunked bodies and answers 413 as JSON.

The PostgreSQL test's decide server and drains reach the test database through a TCP proxy of the
test's own (PgProxy). "PostgreSQL stops" is the proxy closing its listening socket and every open
connection; "PostgreSQL is back" is the proxy listening again. To the server and the drains that is
what a stopped server looks like (the open connections end, new ones are refused), and it costs no
cluster of its own (an initdb and a migrate took a minute and a half of the suite). A real
PostgreSQL killed and started again is covered by tests/test_runner.py, where the runner brings the
killed cluster back.
"""

import contextlib
import http.client
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from django.db import connection
from django.db.models import Count

from personalization import redis_client, rkeys, services
from personalization.decide import runtime as decide_runtime
from personalization.models import Event
from tests.factories import event_make, events_post, key_make
from tests.personalization.conftest import free_port, server_env
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


class PgProxy:
    """A TCP proxy on a port of its own in front of the test's PostgreSQL: threads of the test process
    copy the bytes both ways. `stop()` makes it look like a stopped server, `start()` like a started one."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.port = free_port()
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.open: set[socket.socket] = set()

    def start(self) -> None:
        # create_server sets SO_REUSEADDR: the port is free again at once after stop().
        listener = socket.create_server(("127.0.0.1", self.port))
        with self.lock:
            self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def start_if_stopped(self) -> None:
        if self.listener is None:
            self.start()

    def stop(self) -> None:
        """New connections are refused (nothing listens) and the open ones end, as when PostgreSQL stops."""
        with self.lock:
            listener, self.listener = self.listener, None
            ends, self.open = self.open, set()
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)  # wakes the copying threads, which close both ends

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:  # stopped meanwhile
                    client.close()
                    server.close()
                    continue
                self.open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._copy, args=(source, sink), daemon=True).start()

    def _copy(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # One side ended: so does the other (a half-open PostgreSQL connection is of no use).
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            with self.lock:
                self.open.difference_update((source, sink))


class Stack:
    """A decide server (granian) and drains, on the test database through a PgProxy and the test Redis."""

    def __init__(self, proxy: PgProxy):
        self.proxy, self.key, self.http_port = proxy, "", free_port()
        db = connection.settings_dict
        user = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        self.env = {
            **server_env({}),
            "DATABASE_URL": f"postgres://{user}@127.0.0.1:{proxy.port}/{db['NAME']}",
            "KAIROS_DECIDE_CPU_PINNING": "0",
            # The server's key cache lasts 1 s, not 10: the test waits past it with PostgreSQL away.
            "KAIROS_KEY_CACHE_MS": str(int(KEY_CACHE_SECONDS * 1000)),
        }
        self.server: subprocess.Popen | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=check, timeout=600
        )

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


def stored(project) -> tuple[int, int]:
    """(rows, distinct event ids) stored, read by the test directly (not through the proxy)."""
    counts = Event.objects.filter(project=project).aggregate(rows=Count("id"), ids=Count("event_id", distinct=True))
    return counts["rows"], counts["ids"]


@pytest.fixture(scope="module")
def stack_server(django_db_setup):
    """The proxy and a decide server behind it, for the module (a server takes seconds to start)."""
    db = connection.settings_dict
    proxy = PgProxy(db["HOST"], int(db["PORT"]))
    proxy.start()
    s = Stack(proxy)
    try:
        s.server = _common.server_start(s.http_port, 1, 2, env=s.env)
        yield s
    finally:
        _common.process_stop(s.server)
        proxy.stop()


@pytest.fixture
def stack(stack_server, project):
    """The module's stack with a key of this test's own (committed, and published to the test Redis
    database). Tests that use it need `django_db(transaction=True)`, so the server sees the key."""
    stack_server.key = key_make(project=project, kind="public")
    try:
        yield stack_server
    finally:
        stack_server.proxy.start_if_stopped()  # a failed test must not leave the next one without PostgreSQL


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
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
@pytest.mark.django_db(transaction=True)
def test_postgres_stopped__decide_answers_events_wait__drained_exactly_once_when_back(project, stack):
    make_experience(project)  # committed and published to Redis before the server first asks
    status, answer = stack.decide("before")
    assert status == 200 and answer["assignments"]["hero"]["variant"] in {"v0", "v1", "v2"}
    assert stack.events(range(0, 25), "before") == 200

    stack.proxy.stop()
    time.sleep(KEY_CACHE_SECONDS + 0.5)  # past the key cache: the key is checked again, in Redis (published there)
    for n in range(5):
        status, answer = stack.decide(f"during-{n}")
        assert status == 200, answer
        assert answer["assignments"]["hero"]["variant"] in {"v0", "v1", "v2"}
    assert stack.events(range(0, 25), "during") == 200, "accepted into the stream while PostgreSQL is away"
    failed = stack.run("manage.py", "events_drain", "--once", "--claim-idle-ms", "0", check=False)
    assert failed.returncode != 0, "the drain cannot write and says so"
    assert "connect" in failed.stderr.lower(), failed.stderr[-2000:]
    stream = redis_client.worker()
    assert stream.xlen(rkeys.EVENTS_STREAM) >= 2, "nothing was acknowledged"
    assert stored(project) == (0, 0)

    stack.proxy.start()
    drained = stack.run("manage.py", "events_drain", "--once", "--claim-idle-ms", "0")
    assert "drained" in drained.stdout
    assert stored(project) == (50, 50)
    # Another drain finds nothing left (in this process: Django starts in seconds, and the drain
    # subprocesses above already showed the command's part).
    assert services.events_drain(claim_idle_ms=0) == 0
    assert stored(project) == (50, 50), "exactly once"
    assert stream.xlen(rkeys.EVENTS_STREAM) == 0
