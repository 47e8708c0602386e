"""`make run`'s own runner (python -m config.runner) under faults, against embedded PostgreSQL and Redis
of the test's own (a var folder and free ports), with a loop of decide and events running throughout:

- Redis SIGKILLed three times in a row: the runner starts it again, decide answers 200 all along
  (from its snapshot while Redis is away), events are accepted again, /readyz is ready again;
- PostgreSQL SIGKILLed: decide and events keep answering 200 for a key this process has used
  (warm cache) and for one it has never seen (cold), since public keys are checked in Redis; the
  runner starts PostgreSQL again;
- the Celery worker SIGKILLed: the runner starts it again and the drain goes on;
- at the end every process is running, every event accepted is stored exactly once, and SIGTERM
  stops the runner and all its children.
"""

import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import psycopg
import pytest

from bench.redis_restarts import alive
from bench.redis_restarts import ready as readyz_ok
from tests.factories import event_make
from tests.personalization.conftest import free_port
from tests.workers import until

ROOT = Path(__file__).resolve().parents[1]
CHILDREN = {"granian", "celery", "demo_traffic"}  # web + decide, worker + beat, traffic


def children_of(pid: int) -> dict[int, str]:
    """Live direct children of a process: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if ppid == pid and alive(int(entry.name)):
            found[int(entry.name)] = cmdline
    return found


class RunnerStack:
    def __init__(self, var: Path):
        self.var = var
        self.pg_port, self.redis_port, self.web_port, self.decide_port = (free_port() for _ in range(4))
        drop = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "KAIROS_TEST_REDIS_URL"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            KAIROS_VAR_DIR=str(var),
            KAIROS_PG_PORT=str(self.pg_port),
            KAIROS_REDIS_PORT=str(self.redis_port),
            KAIROS_WEB_PORT=str(self.web_port),
            KAIROS_DECIDE_PORT=str(self.decide_port),
            KAIROS_LOG_LEVEL="WARNING",
            # The load, the demo traffic and the test's own calls all come from 127.0.0.1: the per-address
            # limits (100 event requests a second) would answer 429 to the test's calls on a fast machine.
            KAIROS_EVENTS_PER_IP_PER_SECOND="1000000",
            KAIROS_DECIDE_PER_IP_PER_SECOND="1000000",
            # Restarts after 0.2, 0.4 … 2 s instead of 1, 2 … 30 s: the same doubling backoff (tested on
            # its own in test_supervisor.py), not waited for in whole seconds three Redis kills in a row.
            KAIROS_RESTART_FIRST_MS="200",
            KAIROS_RESTART_CAP_MS="2000",
            # Entries the killed worker had read are claimed by the next one after 2 s idle, not 30 s (storing
            # is idempotent by event id, so an early claim can only repeat work, never lose or double it).
            KAIROS_DRAIN_CLAIM_IDLE_MS="2000",
        )
        self.runner: subprocess.Popen | None = None
        self.log = var / "runner.log"

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600, check=True
        )
        return done.stdout.strip()

    def key_make(self) -> str:
        code = (
            "from personalization import services\nfrom personalization.models import Project\n"
            "p = Project.objects.filter(slug='runner').first()\n"
            "p = p or services.project_create(name='Runner', slug='runner')\n"
            "print(services.api_key_create(project=p, kind='public', name='site')[1])"
        )
        return self.run("manage.py", "shell", "-c", code).splitlines()[-1]

    def up(self) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        self.run("-m", "config.embedded", "start")
        self.run("manage.py", "migrate", "--noinput", "-v", "0")
        with self.log.open("ab") as log:
            self.runner = subprocess.Popen(
                [sys.executable, "-m", "config.runner"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def down(self) -> None:
        if self.runner is not None and self.runner.poll() is None:
            self.runner.send_signal(signal.SIGTERM)
            try:
                self.runner.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.runner.pid, signal.SIGKILL)
        subprocess.run([sys.executable, "-m", "config.embedded", "stop"], cwd=ROOT, env=self.env, timeout=120)
        shutil.rmtree(self.var, ignore_errors=True)

    def post(self, path: str, key: str, body: dict) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.decide_port, timeout=15)
        try:
            conn.request("POST", path, body=orjson.dumps(body), headers={"Authorization": f"Bearer {key}"})
            response = conn.getresponse()
            raw = response.read()
        except OSError:
            return 0, {}
        finally:
            conn.close()
        return response.status, orjson.loads(raw) if raw else {}

    def ready(self) -> bool:
        return readyz_ok(self.web_port)

    def port_open(self, port: int) -> bool:
        import socket

        with socket.socket() as sock:
            sock.settimeout(0.3)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def redis_pid(self) -> int | None:
        try:
            return int((self.var / "redis" / "redis.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def pg_pid(self) -> int:
        return int((self.var / "pg" / "postmaster.pid").read_text().splitlines()[0])

    def stored_ids(self, prefix: str) -> list[str]:
        url = f"postgresql://postgres@127.0.0.1:{self.pg_port}/kairos"
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                rows = conn.execute(
                    "SELECT event_id FROM personalization_event WHERE event_id LIKE %s", [prefix + "%"]
                ).fetchall()
        except psycopg.OperationalError:
            return []
        return [row[0] for row in rows]

    def processes(self) -> dict[int, str]:
        return children_of(self.runner.pid)


class Load(threading.Thread):
    """A site: a decide and a batch of 10 events in turn. A batch refused (503 while Redis is away, 429
    over the rate limit) is sent again, as the snippet does, so every batch ends accepted; decide must
    never answer anything but 200."""

    def __init__(self, stack: RunnerStack, key: str):
        super().__init__(daemon=True)
        self.stack, self.key = stack, key
        self.stop = threading.Event()
        self.accepted: set[str] = set()
        self.decide = Counter()
        self.events = Counter()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            ids = [f"ld-{n + i}" for i in range(10)]
            n += 10
            body = {"events": [event_make(int(i[3:]), event_id=i) for i in ids]}
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # even when stopping: a batch refused once is sent again
                status, answer = self.stack.post("/api/v1/events", self.key, body)
                self.events[status] += 1
                if status == 200:
                    assert answer["accepted"] + answer["duplicates"] == 10, answer
                    self.accepted.update(ids)
                    break
                time.sleep(0.2)
            status, _ = self.stack.post("/api/v1/decide", self.key, {"anonymous_id": f"u{n % 50}"})
            self.decide[status] += 1
            # A site's pace, not a flood: the faults are what is tested, and every event sent has to be
            # drained before the end (tens of thousands took most of this test's minute).
            time.sleep(0.02)


@pytest.fixture
def runner_stack():
    stack = RunnerStack(ROOT / "var" / f"test-runner-{os.getpid()}")
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.mark.slow
def test_runner__redis_postgres_worker_killed_under_load__stack_recovers_nothing_lost(runner_stack):
    stack = runner_stack
    key = stack.key_make()
    until(stack.ready, "ready after start", stack.log, timeout=120)
    until(lambda: len(stack.processes()) == 5, "web, decide, worker, beat and traffic running", stack.log, timeout=30)
    # /readyz is the web process's; the decide process binds its own port, later on a busy machine.
    until(lambda: stack.port_open(stack.decide_port), "decide listening", stack.log, timeout=60)
    load = Load(stack, key)
    load.start()
    until(lambda: len(load.accepted) >= 50, "events accepted", stack.log, timeout=60)
    figures = []

    for round_ in range(3):
        before = stack.redis_pid()
        os.kill(before, signal.SIGKILL)
        killed = time.monotonic()
        until(lambda b=before: not alive(b), "redis gone", stack.log, timeout=10)
        until(
            lambda b=before: stack.redis_pid() not in (None, b) and stack.port_open(stack.redis_port),
            f"redis started again by the runner (round {round_})",
            stack.log,
            timeout=60,
        )
        until(stack.ready, f"/readyz ready after the Redis restart (round {round_})", stack.log, timeout=60)
        figures.append(f"redis kill {round_}: ready after {time.monotonic() - killed:.1f} s")
        accepted = len(load.accepted)
        until(lambda a=accepted: len(load.accepted) >= a + 50, "events accepted again", stack.log, timeout=60)

    # PostgreSQL away: a key this process has served (the load's) and one it has never seen.
    cold_key = stack.key_make()
    os.kill(stack.pg_pid(), signal.SIGKILL)
    killed = time.monotonic()
    until(lambda: not stack.port_open(stack.pg_port), "PostgreSQL down", stack.log, timeout=10)
    cold_decide, _ = stack.post("/api/v1/decide", cold_key, {"anonymous_id": "cold"})
    cold_ids = [f"ld-cold-{i}" for i in range(5)]
    cold_events, answer = stack.post(
        "/api/v1/events", cold_key, {"events": [event_make(i, event_id=e) for i, e in enumerate(cold_ids)]}
    )
    assert not stack.port_open(stack.pg_port), "PostgreSQL was still down while the cold key was used"
    assert cold_decide == 200 and cold_events == 200 and answer["accepted"] == 5
    load.accepted.update(cold_ids)
    until(lambda: stack.port_open(stack.pg_port), "PostgreSQL started again by the runner", stack.log, timeout=120)
    until(stack.ready, "/readyz ready after the PostgreSQL restart", stack.log, timeout=60)
    figures.append(f"postgres kill: ready after {time.monotonic() - killed:.1f} s")

    worker = next(pid for pid, cmd in stack.processes().items() if "celery" in cmd and " worker" in cmd)
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    until(
        lambda: any("celery" in cmd and " worker" in cmd and pid != worker for pid, cmd in stack.processes().items()),
        "worker started again by the runner",
        stack.log,
        timeout=60,
    )
    accepted = len(load.accepted)
    until(lambda: len(load.accepted) >= accepted + 50, "events accepted after the worker kill", stack.log, timeout=60)
    until(stack.ready, "/readyz ready after the worker kill", stack.log, timeout=60)
    figures.append(f"worker kill: ready after {time.monotonic() - killed:.1f} s")

    load.stop.set()
    load.join(180)
    assert not load.is_alive()
    stopped = time.monotonic()
    stored = until(
        lambda: (ids := stack.stored_ids("ld-")) and set(ids) >= load.accepted and ids,
        "every accepted event stored",
        stack.log,
        timeout=180,
    )
    figures.append(f"every accepted event stored {time.monotonic() - stopped:.1f} s after the load stopped")
    print("\n".join(figures), f"\naccepted {len(load.accepted)}, stored {len(stored)}", load.decide, load.events)
    assert len(stored) == len(set(stored)) == len(load.accepted), "stored exactly once, and nothing not accepted"
    assert set(load.decide) == {200}, f"decide answered {load.decide}"
    assert set(load.events) <= {200, 429, 503}, f"events answered {load.events}"
    assert load.events[503] > 0, "the load did run while Redis was away"

    processes = stack.processes()
    assert len(processes) == 5 and {name for name in CHILDREN if any(name in cmd for cmd in processes.values())} == (
        CHILDREN
    ), processes
    assert "stopping the rest" not in stack.log.read_text()
    stack.runner.send_signal(signal.SIGTERM)
    assert stack.runner.wait(60) == 0
    assert "all Kairos processes stopped" in stack.log.read_text()
    assert not any(alive(pid) for pid in processes), "every child stopped with the runner"
