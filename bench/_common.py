"""Helpers shared by the benchmarks: the bench database and Redis db, the decide server started as
production starts it, and wrk.

Import after putting the repository root on sys.path; nothing here imports Django at module level,
so `bench_environment()` can set DATABASE_URL / REDIS_URL before `django_setup()`.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from config import embedded, runner

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "kairos_bench"
BENCH_REDIS_DB = 14
# Throttling stays on in every bench, as in production: each request pays its count in Redis. Only
# the limits are raised above what one bench machine sends from one address with one key.
THROTTLE_ENV = {
    name: "1000000"
    for name in (
        "KAIROS_DECIDE_PER_KEY_PER_SECOND",
        "KAIROS_DECIDE_PER_IP_PER_SECOND",
        "KAIROS_EVENTS_PER_KEY_PER_SECOND",
        "KAIROS_EVENTS_PER_IP_PER_SECOND",
    )
}

# Prepended to wrk scripts that need each thread's number (`tid`) or all threads (`threads`, for done()).
WRK_THREADS_LUA = r"""
local threads, next_id = {}, 1

function setup(thread)
  thread:set("tid", next_id)
  threads[#threads + 1] = thread
  next_id = next_id + 1
end
"""

# Appended to every wrk script: one machine-readable line with the figures the benches print.
WRK_DONE_LUA = r"""
function done(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 75, 90, 99, 99.9}) do p[#p + 1] = latency:percentile(q) end
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d,'
    .. ' "p50_us": %d, "p75_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    p[1], p[2], p[3], p[4], p[5], latency.max, latency.mean))
end
"""


def with_path(url: str, path: str) -> str:
    return urlunparse(urlparse(url)._replace(path=path))


def bench_environment(redis_db: int = BENCH_REDIS_DB, database: str = BENCH_DB) -> tuple[str, str]:
    """The bench's own database and Redis db, next to whatever DATABASE_URL / REDIS_URL name."""
    database_url = with_path(os.environ.get("DATABASE_URL") or embedded.database_url(), f"/{database}")
    redis_url = with_path(os.environ.get("REDIS_URL") or embedded.redis_url(0), f"/{redis_db}")
    os.environ.update(
        {"DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    )
    return database_url, redis_url


def database_ensure(database_url: str) -> None:
    """Create the bench database (the one database_url names) on the same server when it is missing."""
    import psycopg

    name = urlparse(database_url).path.lstrip("/")
    with psycopg.connect(with_path(database_url, "/postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(migrate: bool = False) -> None:
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(port: int, server: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"granian exited with code {server.returncode} before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"granian did not answer /healthz on port {port} within {seconds:.0f} s")


def granian_command(port: int, workers: int = 2, blocking_threads: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    """The decide service's command line, as config.runner and docker compose start it."""
    return [
        str(Path(sys.executable).parent / "granian"),
        "--interface",
        "wsgi",
        "config.wsgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(blocking_threads),
        "--no-ws",
        "--log-level",
        "warning",
        *extra,
    ]


def server_start(
    port: int, workers: int = 2, blocking_threads: int = 2, extra: tuple[str, ...] = (), env: dict | None = None
) -> subprocess.Popen:
    """Start the decide service in its own process group, with the environment config.runner gives
    it (KAIROS_ROLE=decide, CPU pinning) and throttling on (THROTTLE_ENV); returns once it answers."""
    command = granian_command(port, workers, blocking_threads, extra)
    server_env = {**os.environ, **runner.DECIDE_ENV, **THROTTLE_ENV, **(env or {})}
    server = subprocess.Popen(command, cwd=ROOT, env=server_env, start_new_session=True)
    try:
        wait_healthy(port, server)
    except BaseException:
        process_stop(server)
        raise
    return server


def process_group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time used so far by the live processes of a process group (e.g. a server
    started with start_new_session=True and its workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, …, utime (12), stime (13)
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def backend_cpu_seconds() -> float | None:
    """CPU time of this process's PostgreSQL backend so far; None when the server is not on this machine
    (or its /proc entry is not readable)."""
    fields = _proc_stat(_backend_pid())
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds() -> float | None:
    """CPU time of the whole PostgreSQL server so far: every process of it (backends, WAL writer,
    checkpointer...), those that ended included. For work that opens connections of its own and
    closes them (the drain's reader thread). None when the server is not on this machine."""
    backend = _proc_stat(_backend_pid())
    postmaster = None if backend is None else _proc_stat(int(backend[1]))
    if postmaster is None:
        return None
    ticks = sum(int(field) for field in postmaster[11:15])  # its own and its ended children's
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (child := _proc_stat(int(entry.name))) and child[1] == backend[1]:
            ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ... utime at 11, stime at 12,
    cutime at 13, cstime at 14); None when it is not readable."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_stop(proc: subprocess.Popen | None) -> None:
    """Stop a process started with start_new_session=True, and its children."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wrk_ensure() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing; installing Debian's wrk with apt-get", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed for the HTTP load; install it with `apt-get install -y wrk`")
    return found


def wrk_command(
    wrk: str, url: str, script: Path, seconds: int, connections: int, args: list[str] | None = None, threads: int = 2
) -> list[str]:
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    return [*command, "--", *args] if args else command


def wrk_parse(stdout: str, stderr: str = "") -> dict:
    """The figures of a script ending in WRK_DONE_LUA, plus `rps` and wrk's stdout; lines the script
    prints as `NAME {json}` (other than WRK_RESULT) are returned under their name."""
    result: dict = {}
    for line in stdout.splitlines():
        name, _, rest = line.partition(" ")
        if name.isupper() and rest.startswith("{"):
            result[name] = json.loads(rest)
    if "WRK_RESULT" not in result:
        raise SystemExit(f"wrk printed no result:\n{stdout}\n{stderr}")
    figures = result.pop("WRK_RESULT")
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures.update(result)
    figures["stdout"] = stdout
    return figures


def wrk_run(
    wrk: str,
    url: str,
    script: Path,
    seconds: int,
    connections: int,
    args: list[str] | None = None,
    env: dict | None = None,
    threads: int = 2,
) -> dict:
    """Run wrk with a script ending in WRK_DONE_LUA; returns wrk_parse's figures."""
    command = wrk_command(wrk, url, script, seconds, connections, args, threads)
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True)
    return wrk_parse(out.stdout, out.stderr)
