"""`make run`: start web, decide, Celery worker and beat and the demo traffic; Ctrl-C stops them all.

The embedded PostgreSQL and Redis are started before (python -m config.embedded start) and stopped
after, by the Makefile. In between, config.supervisor keeps everything up: a process that exits is
started again with backoff, and so is an embedded server that stops answering.
"""

import os
import signal
import sys
import time
from functools import partial

import redis

from config import embedded
from config.env import env_int, env_str
from config.supervisor import Backoff, Child, Daemon, Supervisor
from personalization import rkeys

REDIS_URL = env_str("REDIS_URL", embedded.redis_url(0))
# The worker and beat write their heartbeats from their main loops (config/heartbeat.py), busy or not;
# one that has not for this long is stuck (a worker that lost the broker for good, a frozen beat).
HUNG_AFTER_SECONDS = 120.0

# How soon a process that stopped is started again (doubling per crash in a row, up to the cap). The
# defaults suit a person watching the console; the fault tests shorten them so that recovery is not
# waited for in seconds of backoff.
BACKOFF = Backoff(
    first=env_int("KAIROS_RESTART_FIRST_MS", 1000) / 1000, cap=env_int("KAIROS_RESTART_CAP_MS", 30_000) / 1000
)

HOST = env_str("KAIROS_HOST", "127.0.0.1")
WEB_PORT = env_int("KAIROS_WEB_PORT", 8000)
DECIDE_PORT = env_int("KAIROS_DECIDE_PORT", 8001)
PY = sys.executable
BIN = os.path.dirname(PY)


def _granian(app: str, port: int, workers: int) -> list[str]:
    return [
        f"{BIN}/granian",
        "--interface",
        "wsgi",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        "2",
        "--no-ws",
        "--log-level",
        "warning",
    ]


DECIDE_ENV = {"KAIROS_ROLE": "decide", "KAIROS_DECIDE_CPU_PINNING": "1"}  # see config.cpu_pinning


def processes() -> dict[str, tuple[list[str], dict]]:
    return {
        "web": (_granian("config.wsgi:application", WEB_PORT, 1), {}),
        "decide": (_granian("config.wsgi:application", DECIDE_PORT, 2), DECIDE_ENV),
        "worker": ([f"{BIN}/celery", "-A", "config", "worker", "-l", "warning", "--concurrency", "2"], {}),
        "beat": ([f"{BIN}/celery", "-A", "config", "beat", "-l", "warning", "-s", "var/celerybeat-schedule"], {}),
        "traffic": ([PY, "manage.py", "demo_traffic", "--url", f"http://{HOST}:{DECIDE_PORT}"], {}),
    }


def embedded_daemons() -> list[Daemon]:
    """The embedded servers this machine runs (those without a URL of their own), watched like the rest:
    if Redis or PostgreSQL dies under `make run`, the runner starts it again from its data folder."""
    daemons = []
    if not os.environ.get("DATABASE_URL"):
        daemons.append(Daemon("PostgreSQL", lambda: embedded.port_open(embedded.PG_PORT), embedded.pg_start))
    if not os.environ.get("REDIS_URL"):
        daemons.append(Daemon("Redis", lambda: embedded.port_open(embedded.REDIS_PORT), embedded.redis_start))
    return daemons


def heartbeat_fresh(key: str) -> bool:
    """The worker and beat each write a heartbeat key every 5 s: one older than a minute, while Redis
    answers, means that process no longer works. With Redis away nobody can work, and restarting them
    would not help, so that counts as healthy."""
    try:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2) as client:
            beat = client.get(key)
    except redis.RedisError:
        return True
    return beat is not None and time.time() - int(beat) <= rkeys.WORKER_HEARTBEAT_MAX_AGE_SECONDS


HEARTBEATS = {"worker": rkeys.WORKER_HEARTBEAT, "beat": rkeys.BEAT_HEARTBEAT}


def main() -> int:
    children = [
        Child(
            name,
            command,
            {**os.environ, **extra_env},
            healthy=partial(heartbeat_fresh, HEARTBEATS[name]) if name in HEARTBEATS else None,
        )
        for name, (command, extra_env) in processes().items()
    ]
    supervisor = Supervisor([*embedded_daemons(), *children], backoff=BACKOFF, hung_after=HUNG_AFTER_SECONDS)
    signal.signal(signal.SIGINT, supervisor.stop)
    signal.signal(signal.SIGTERM, supervisor.stop)
    print(
        "\n  Kairos is running\n"
        f"  dashboard:  http://{HOST}:{WEB_PORT}/   login: demo / kairos-demo\n"
        f"  decide API: http://{HOST}:{DECIDE_PORT}/api/v1/decide   API docs: http://{HOST}:{WEB_PORT}/api/docs/\n"
        "  A process that stops is started again; Ctrl-C stops everything.\n",
        flush=True,
    )
    supervisor.run()
    print("all Kairos processes stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
