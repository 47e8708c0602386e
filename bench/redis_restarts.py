"""Redis killed and restarted under `make run`, the way the acceptance of issue 16 checks it.

Start `make run` first (same environment: KAIROS_*_PORT, KAIROS_VAR_DIR), then:

    .venv/bin/python bench/redis_restarts.py [--kills 10] [--runner-pid PID]

While demo traffic runs (started by `make run`) and a loop of its own sends events with known ids, it
SIGKILLs the embedded redis-server (its pid from var/redis/redis.pid) `--kills` times in a row. After
each kill it waits for the runner to start Redis again and for /readyz to answer 200, and prints the time.
At the end it stops sending, waits for the drain, and prints events accepted vs events stored (its own,
by id), and whether every process of the runner is running (with --runner-pid).
"""

import argparse
import http.client
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from config import embedded  # noqa: E402
from config.env import env_int  # noqa: E402

WEB_PORT = env_int("KAIROS_WEB_PORT", 8000)
DECIDE_PORT = env_int("KAIROS_DECIDE_PORT", 8001)


def ready(port: int = WEB_PORT) -> bool:
    """/readyz answers 200 (tests/test_runner.py asks it too)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def redis_pid() -> int | None:
    try:
        return int((embedded.REDIS_DIR / "redis.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int) -> bool:
    """The process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class Sender(threading.Thread):
    """Batches of 10 events with known ids; a refused batch (503, 429, no answer) is sent again."""

    def __init__(self, key: str, tag: str):
        super().__init__(daemon=True)
        self.key, self.tag = key, tag
        self.stop = threading.Event()
        self.accepted: set[str] = set()
        self.refused = 0
        self.decide_codes: dict[int, int] = {}

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", DECIDE_PORT, timeout=15)
        try:
            conn.request("POST", path, body=orjson.dumps(body), headers={"Authorization": f"Bearer {self.key}"})
            response = conn.getresponse()
            return response.status, orjson.loads(response.read() or b"{}")
        except OSError:
            return 0, {}
        finally:
            conn.close()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            ids = [f"{self.tag}-{n + i}" for i in range(10)]
            n += 10
            now = datetime.now(UTC).isoformat()
            events = [
                {
                    "event_id": i,
                    "type": "page_view",
                    "anonymous_id": f"rr-{n % 97}",
                    "timestamp": now,
                    "properties": {"url": "/redis-restarts"},
                }
                for i in ids
            ]
            while True:  # even when stopping: a batch refused once is sent again until accepted
                status, _ = self.post("/api/v1/events", {"events": events})
                if status == 200:
                    self.accepted.update(ids)
                    break
                self.refused += 1
                time.sleep(0.3)
            status, _ = self.post("/api/v1/decide", {"anonymous_id": f"rr-{n % 97}"})
            self.decide_codes[status] = self.decide_codes.get(status, 0) + 1
            time.sleep(0.05)


def stored(tag: str) -> set[str]:
    with psycopg.connect(embedded.database_url().replace("postgres://", "postgresql://")) as conn:
        rows = conn.execute("SELECT event_id FROM personalization_event WHERE event_id LIKE %s", [tag + "-%"])
        return {row[0] for row in rows}


def wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--runner-pid", type=int, default=0)
    args = parser.parse_args()
    keys = orjson.loads((embedded.VAR / "demo-keys.json").read_bytes())
    if not wait(ready, 120):
        print("/readyz is not ready: is `make run` up with the same environment?")
        return 1
    tag = f"rr{int(time.time())}"
    sender = Sender(keys["public_key"], tag)
    sender.start()
    wait(lambda: len(sender.accepted) >= 100, 60)
    times = []
    for kill in range(1, args.kills + 1):
        before = redis_pid()
        os.kill(before, signal.SIGKILL)
        killed = time.monotonic()
        wait(lambda b=before: not alive(b), 10)
        back = wait(lambda b=before: redis_pid() not in (None, b) and embedded.port_open(embedded.REDIS_PORT), 120)
        is_ready = back and wait(ready, 120)
        seconds = time.monotonic() - killed
        times.append(seconds)
        print(
            f"kill {kill:2}: redis pid {before} -> {redis_pid()}, /readyz ready after {seconds:.1f} s"
            + ("" if is_ready else "  NOT READY"),
            flush=True,
        )
        accepted = len(sender.accepted)
        wait(lambda a=accepted: len(sender.accepted) >= a + 100, 60)  # traffic flows again before the next kill
    sender.stop.set()
    sender.join(300)
    wait(lambda: stored(tag) >= sender.accepted, 300)
    kept = stored(tag)
    print(f"time to ready: max {max(times):.1f} s, mean {sum(times) / len(times):.1f} s")
    print(
        f"events accepted {len(sender.accepted)}, stored {len(kept)}, accepted but not stored"
        f" {len(sender.accepted - kept)}, stored but never accepted {len(kept - sender.accepted)}"
    )
    print(f"event batches refused and sent again: {sender.refused}; decide answers {sender.decide_codes}")
    if args.runner_pid:
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(stat[1]) == args.runner_pid and stat[0] != "Z":
                        children.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:90])
                except (FileNotFoundError, IndexError):
                    continue
        print(
            f"runner {args.runner_pid} {'running' if alive(args.runner_pid) else 'GONE'}; {len(children)} children:",
            *children,
            sep="\n  ",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
