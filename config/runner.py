"""`make run`: start web, decide, Celery worker and beat and the demo traffic; Ctrl-C stops them all.

The embedded PostgreSQL and Redis are started before (python -m config.embedded start) and stopped
after, by the Makefile.
"""

import os
import signal
import subprocess
import sys
import time

from config.env import env_int, env_str

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


def main() -> int:
    running: dict[str, subprocess.Popen] = {}
    for name, (command, extra_env) in processes().items():
        running[name] = subprocess.Popen(command, env={**os.environ, **extra_env}, start_new_session=True)
    print(
        "\n  Kairos is running\n"
        f"  dashboard:  http://{HOST}:{WEB_PORT}/   login: demo / kairos-demo\n"
        f"  decide API: http://{HOST}:{DECIDE_PORT}/api/v1/decide   API docs: http://{HOST}:{WEB_PORT}/api/docs/\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        for name, proc in running.items():
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping the rest", file=sys.stderr)
                stopping = True
                break
        time.sleep(0.5)
    for proc in running.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in running.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    print("all Kairos processes stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
