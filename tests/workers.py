"""A real Celery worker process for tests: the production settings, told where the test data lives
through the environment only (like docker compose), stopped on the way out."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings


def database_url() -> str:
    """The test database (pytest-django has renamed NAME by now), as the worker's DATABASE_URL."""
    db = settings.DATABASES["default"]
    auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@contextmanager
def celery_worker(log_path: Path, *, pool: str = "solo", env: dict | None = None) -> Iterator[subprocess.Popen]:
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        **(env or {}),
    }
    command = [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "--pool", pool, "-l", "info"]
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
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
