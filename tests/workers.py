"""A real Celery worker process for tests: the production settings, told where the test data lives
through the environment only (like docker compose), stopped on the way out."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis
from django.conf import settings

from tests.db_flush import TEST_PROCESS_PREFIX


def database_url() -> str:
    """The test database (pytest-django has renamed NAME by now), as the worker's DATABASE_URL."""
    db = settings.DATABASES["default"]
    auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@contextmanager
def celery_worker(
    log_path: Path, *, pool: str = "solo", env: dict | None = None, kill: bool = False
) -> Iterator[subprocess.Popen]:
    """A worker for the `with` block. On the way out it is asked to stop (SIGTERM: it finishes the task it
    is running, up to 15 s), so that a test can assert on what the worker wrote after the block.
    `kill`: for a test that asserts nothing of the worker's after the block (browser tests), SIGKILL and
    end its database sessions at once. A warm stop waited for whatever the test's work had queued behind
    it (a metric backfill the first report queues: 6 s, 15 s on a busy machine), and a worker killed after
    15 s left its query running in PostgreSQL, where the database flush after the test waited for it."""
    application_name = subprocess_app_name("worker")
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "PGAPPNAME": application_name,  # libpq's: names its sessions in pg_stat_activity, for `kill`
        **(env or {}),
    }
    # Without mingle: a starting worker asks the others for their revoked tasks and waits a second for
    # answers; a test's worker is alone, and the tests start some twenty of them.
    command = [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "--pool", pool, "-l", "info"]
    command += ["--without-mingle", "--without-gossip"]
    if pool == "prefork":
        command += ["--concurrency", "1"]
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield worker
        finally:
            # Its own session: the signal reaches the worker and nothing else.
            if kill:
                _kill(worker, application_name)
            elif worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()


def subprocess_app_name(kind: str) -> str:
    """libpq's application_name (PGAPPNAME) for a process a test starts on the test database: its sessions
    are ended after the test if they are still there (tests/db_flush.py), and can be found by name."""
    return f"{TEST_PROCESS_PREFIX}{kind}-{uuid.uuid4().hex[:12]}"


def _kill(worker: subprocess.Popen, application_name: str) -> None:
    """SIGKILL the worker, then end its PostgreSQL sessions: a killed client's query runs on until the server
    next talks to it, holding its locks (its open transaction rolls back). Its unacknowledged message stays
    in the test's Redis database, which the next test starts by emptying."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    with db_connect() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", [application_name]
        )


def _broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def unacked_visible_again(visibility_seconds: float) -> bool:
    """Whether every message a killed worker left unacknowledged has been so for the visibility timeout:
    a worker started from then on hands it out again in its first scan (kombu scans when it starts).
    False while there is none (kombu's `unacked_index`: delivery tag -> time delivered)."""
    delivered = _broker().zrange("unacked_index", 0, -1, withscores=True)
    return bool(delivered) and all(at <= time.time() - visibility_seconds for _, at in delivered)


def broker_settled() -> bool:
    """No task waits in the queue and none is unacknowledged: with acks_late, nothing runs any more and
    nothing more will (no message is left to deliver twice)."""
    broker = _broker()
    return broker.llen("celery") == 0 and broker.hlen("unacked") == 0


def db_connect() -> psycopg.Connection:
    """A connection of the test's own to the test database (not Django's)."""
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"] or None, dbname=db["NAME"]
    )


def until(condition: Callable, what: str, log_path: Path | None = None, timeout: float = 90):
    """condition()'s first truthy value, polled; fails with the worker's log after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    log = log_path.read_text()[-4000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


class DbLock:
    """A lock held from a connection of the test's own, so that a worker's query waits on it: the
    test then knows the worker is at that query, and can kill it there for sure."""

    def __init__(self, sql: str, params: tuple = (), *, query_like: str):
        self.query_like = query_like
        self.conn = db_connect()
        self.conn.execute(sql, params)

    @classmethod
    def table(cls, table: str, *, query_like: str = "") -> "DbLock":
        """Every read and write of the table waits."""
        return cls(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE', query_like=query_like or f"%{table}%")

    @classmethod
    def row(cls, table: str, pk: int, *, query_like: str = "") -> "DbLock":
        """Writes of one row wait; reads go on."""
        return cls(f'SELECT 1 FROM "{table}" WHERE id = %s FOR UPDATE', (pk,), query_like=query_like or f"%{table}%")

    def blocked_backends(self) -> list[int]:
        with db_connect() as probe:
            rows = probe.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid() AND query ILIKE %s",
                [self.query_like],
            ).fetchall()
        return [pid for (pid,) in rows]

    def release(self, *, orphans: list[int]) -> None:
        # PostgreSQL notices a killed client only when it next talks to it: end its backends now (their
        # open transactions roll back).
        with db_connect() as admin:
            for pid in orphans:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        self.conn.rollback()
        self.conn.close()
