"""config.supervisor with real subprocesses: crashed processes come back with backoff and say so, a
process that keeps crashing is retried at the cap, a watched server is started again, and only a
stop (SIGTERM to the supervisor) ends everything, grandchildren included."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from config.supervisor import Backoff, Child, Daemon, Supervisor
from tests.workers import until

FAST = Backoff(first=0.05, cap=0.4, healthy_after=30.0)


def running(supervisor: Supervisor) -> threading.Thread:
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    return thread


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_supervisor__child_exits_1__restarted_with_backoff_and_said(tmp_path):
    starts = tmp_path / "starts"
    crasher = Child("crasher", [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(1)"])
    said: list[str] = []
    supervisor = Supervisor([crasher], backoff=FAST, poll=0.01, say=said.append)
    thread = running(supervisor)
    until(lambda: any("keeps crashing" in line for line in said), what="the capped backoff")
    until(lambda: len(starts.read_text()) >= 6, what="a retry at the cap")
    supervisor.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert said[0] == "crasher exited with code 1; restarting it in 0.05 s"
    assert said[1] == "crasher restarted"
    assert "crasher exited with code 1; restarting it in 0.1 s" in said, "the delay doubles"
    assert said[4:6] == ["crasher exited with code 1; restarting it in 0.2 s", "crasher restarted"]
    assert said[6].startswith("crasher exited with code 1 again (4 times in a row); it keeps crashing, so it is")
    assert "retried every 0.4 s" in said[6]
    assert len(said) == 7, "said once, not on every retry at the cap"
    assert supervisor.restarts >= 5


def test_supervisor__killed_child__restarted_and_others_untouched(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    worker, web = Child("worker", sleeper), Child("web", sleeper)
    said: list[str] = []
    supervisor = Supervisor([worker, web], backoff=FAST, poll=0.01, say=said.append)
    thread = running(supervisor)
    until(lambda: worker.proc and web.proc, what="both started")
    first_worker, first_web = worker.proc.pid, web.proc.pid
    os.kill(first_worker, signal.SIGKILL)
    until(lambda: worker.proc.pid != first_worker and worker.proc.poll() is None, what="worker back")
    assert web.proc.pid == first_web and web.proc.poll() is None
    assert said == ["worker was killed by SIGKILL; restarting it in 0.05 s", "worker restarted"]
    supervisor.stop()
    thread.join(20)
    assert worker.proc.poll() is not None and web.proc.poll() is not None


def test_supervisor__watched_server_stops_answering__started_again_failed_start_retried():
    state = {"up": True, "starts": 0, "fail_next": False}

    def start():
        state["starts"] += 1
        if state["fail_next"]:  # like a port still held by the dying server
            state["fail_next"] = False
            raise RuntimeError("port 6379 in use")
        state["up"] = True

    said: list[str] = []
    supervisor = Supervisor([Daemon("Redis", lambda: state["up"], start)], backoff=FAST, poll=0.01, say=said.append)
    thread = running(supervisor)
    until(lambda: state["starts"] >= 1, what="the initial start")
    state["fail_next"], state["up"] = True, False
    until(lambda: state["up"], what="Redis started again")
    until(lambda: said[-1:] == ["Redis restarted"], what="the restart said")
    state["up"] = False  # killed again at once: a new fault, restarted as quickly as the first
    until(lambda: len(said) == 5, what="the second restart said")
    supervisor.stop()
    thread.join(10)
    assert said == [
        "Redis is not answering; restarting it in 0.05 s",
        "Redis could not start (port 6379 in use); restarting it in 0.1 s",
        "Redis restarted",
        "Redis is not answering; restarting it in 0.05 s",
        "Redis restarted",
    ]


def test_supervisor__sigterm__stops_every_child_and_grandchild(tmp_path):
    pids = tmp_path / "pids"
    # Each child starts a grandchild (as granian and celery start their workers) and notes both pids.
    child_code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open({str(pids)!r}, "a") as f:
            f.write(f"{{os.getpid()}} {{grandchild.pid}}\\n")
        time.sleep(600)
    """)
    runner_code = textwrap.dedent(f"""
        import signal, sys
        from config.supervisor import Child, Supervisor
        children = [Child(name, [sys.executable, "-c", {child_code!r}]) for name in ("web", "worker")]
        supervisor = Supervisor(children, poll=0.05, grace=10)
        signal.signal(signal.SIGTERM, supervisor.stop)
        supervisor.run()
        print("stopped", flush=True)
    """)
    root = Path(__file__).resolve().parents[1]
    runner = subprocess.Popen([sys.executable, "-c", runner_code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        lines = until(lambda: pids.exists() and len(pids.read_text().splitlines()) == 2 and pids.read_text(), "pids")
        every_pid = [int(pid) for line in lines.splitlines() for pid in line.split()]
        assert all(alive(pid) for pid in every_pid)
        runner.send_signal(signal.SIGTERM)
        out, _ = runner.communicate(timeout=30)
        assert runner.returncode == 0 and out.strip() == "stopped"
        until(lambda: not any(alive(pid) for pid in every_pid), what="every process gone")
        assert len(pids.read_text().splitlines()) == 2, "a stopping supervisor restarts nothing"
    finally:
        if runner.poll() is None:
            runner.kill()


def test_supervisor__child_running_but_unhealthy__stopped_and_restarted_healthy_one_kept():
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    state = {"healthy": True, "checks": 0}

    def healthy() -> bool:
        state["checks"] += 1
        return state["healthy"]

    worker = Child("worker", sleeper, healthy=healthy)
    web = Child("web", sleeper, healthy=lambda: True)
    said: list[str] = []
    supervisor = Supervisor(
        [worker, web], backoff=FAST, poll=0.01, check_every=0.02, hung_after=0.3, grace=5, say=said.append
    )
    thread = running(supervisor)
    until(lambda: worker.proc and web.proc, what="both started")
    first_worker, first_web = worker.proc.pid, web.proc.pid
    checked = time.monotonic()
    until(lambda: state["checks"] >= 20 and time.monotonic() - checked > 0.6, what="healthy past hung_after")
    assert worker.proc.pid == first_worker and said == [], "a healthy child is left alone"
    state["healthy"] = False  # like a worker whose consumer stopped: running, but no heartbeat
    until(lambda: worker.proc.pid != first_worker, what="the hung worker replaced")
    state["healthy"] = True
    supervisor.stop()
    thread.join(20)
    assert said == [
        "worker is running but not working (unhealthy for 0.3 s); stopping it",
        "worker was killed by SIGTERM; restarting it in 0.05 s",
        "worker restarted",
    ]
    assert web.proc.pid == first_web
