"""config.cpu_pinning: each decide worker claims a slot of its own and pins itself to that slot's CPU."""

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from config import cpu_pinning, runner
from config.cpu_pinning import worker_slot_claim

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **kw
    )


@pytest.fixture
def group():
    held_before = len(cpu_pinning._claims)
    yield f"test-{uuid.uuid4().hex[:12]}"
    while len(cpu_pinning._claims) > held_before:
        cpu_pinning._claims.pop().close()


def test_worker_slot_claim__siblings__get_the_lowest_free_slot_and_a_dead_one_frees_its_slot(group):
    assert worker_slot_claim(group) == 0
    assert worker_slot_claim(group) == 1
    claim = (
        "import sys\nfrom config.cpu_pinning import worker_slot_claim\n"
        f"print(worker_slot_claim({group!r}), flush=True)\nsys.stdin.read()\n"
    )
    first = _python(claim)
    assert first.stdout.readline().strip() == "2"
    second = _python(claim)
    assert second.stdout.readline().strip() == "3"  # slot 2 is still held by the live first process
    first.communicate("")  # the first worker exits
    third = _python(claim)
    assert third.stdout.readline().strip() == "2"
    for proc in (second, third):
        proc.communicate("")


def test_worker_cpu_pin__two_workers__each_on_its_own_cpu_with_later_threads_too(group):
    cpus = sorted(os.sched_getaffinity(0))
    code = (
        "import os, threading\n"
        "from config.cpu_pinning import worker_cpu_pin\n"
        f"cpu = worker_cpu_pin({group!r})\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))\n"
        "t.start(); t.join()\n"
        "print(cpu, seen[0], flush=True)\n"
        "import sys; sys.stdin.read()\n"
    )
    workers = [_python(code), _python(code)]
    answers = [w.stdout.readline().strip().split(maxsplit=1) for w in workers]
    for w in workers:
        w.communicate("")
    if len(cpus) < 2:
        assert [a[0] for a in answers] == ["None", "None"]  # nothing to choose on one CPU: left alone
        return
    assert sorted(int(cpu) for cpu, _ in answers) == cpus[:2]  # the two workers race for slot 0: either order
    for cpu, thread_cpus in answers:
        assert thread_cpus == f"[{cpu}]"  # a thread started after the pin inherits it


def _cpus_allowed(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list"))


def test_decide_service__as_make_run_starts_it__workers_pinned_to_different_cpus():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("this machine has one CPU; the decide service's pinning needs two to be checked")
    command, extra_env = runner.processes()["decide"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [*command]
    command[command.index("--port") + 1] = str(port)
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **extra_env}, start_new_session=True)
    cpus = sorted(os.sched_getaffinity(0))
    try:
        # config/wsgi.py pins a worker before it loads Django, so the pins are there a second after the
        # start; waiting for /healthz (Django loaded in both workers) took most of this test's 20 s.
        deadline, pinned = time.monotonic() + 60, []
        while pinned != [str(cpus[0]), str(cpus[1])]:
            assert time.monotonic() < deadline, f"two decide workers not pinned to CPUs {cpus[:2]} in 60 s: {pinned}"
            time.sleep(0.1)
            workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
            try:
                pinned = sorted(_cpus_allowed(int(pid)) for pid in workers) if len(workers) == 2 else []
            except FileNotFoundError:  # a worker that just exited (granian respawns it)
                pinned = []
        assert _cpus_allowed(server.pid) == _cpus_allowed(os.getpid())  # granian's main process is left alone
    finally:
        # This test is about pinning, not shutdown (granian sometimes took longer than 15 s to stop on
        # SIGTERM under pytest, workers still loading): the whole group is killed.
        os.killpg(server.pid, 9)
        server.wait()
