"""Keeps a set of processes running: what `make run` uses (config/runner.py).

A process that exits, whatever its code, is started again after a backoff that doubles with every
crash in a row (1, 2, 4 … s) up to a cap, and is retried at that cap for as long as it keeps
crashing: a worker that dies because Redis restarted comes back when Redis does, and the rest of
the stack never stops because one part did. A process that stayed up for `healthy_after` seconds
starts again from the first delay. Every exit and restart is said on the console. Only `stop()`
(the runner calls it on Ctrl-C or SIGTERM) ends everything: each child gets SIGTERM in its own
process group (so its own children go too), and SIGKILL after `grace` seconds.

Servers that run on their own (the embedded PostgreSQL and Redis, which daemonize) are watched the
same way through a `Daemon`: a check that says whether they answer and a start function.

A child can also have a `healthy` check, for a process that hangs instead of exiting (a Celery worker
whose consumer stopped after a broker restart): when it has said "not healthy" for `hung_after`
seconds in a row, the child gets SIGTERM (SIGKILL after `grace`) and is restarted like a crash.

No Django here, so it can be tested with real subprocesses and no settings.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    first: float = 1.0
    cap: float = 30.0
    # Long enough to tell a process that cannot start from one that ran and then lost a server; short
    # enough that a server killed again and again (the Redis fault tests) is not waited for longer each time.
    healthy_after: float = 10.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * 2 ** max(0, failures - 1))


class Child:
    """A process the supervisor starts and owns."""

    up_when_started = False  # a process that exits right after its start is crashing, not recovered

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict | None = None,
        cwd: str | None = None,
        healthy: Callable[[], bool] | None = None,
    ):
        self.name, self.argv, self.env, self.cwd, self.healthy = name, argv, env, cwd, healthy
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # Its own session: Ctrl-C in the terminal reaches the supervisor only, which stops the
        # children in order; and a signal to the group reaches a child's own children too.
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, start_new_session=True)

    def down(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        # What the dead process left behind in its group (a worker's pool processes) goes with it,
        # so it never runs beside the process that replaces it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.returncode
        return f"exited with code {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return False
        return True


class Daemon:
    """A server that runs on its own: watched with `alive`, brought back with `start` (which may raise)."""

    # `start` returns once the server answers (or raises): then it is up, and a later death is a new
    # fault (someone killed it), not a crash loop, so the next restart is quick again.
    up_when_started = True

    healthy = None  # `alive` is its check

    def __init__(self, name: str, alive: Callable[[], bool], start: Callable[[], None]):
        self.name, self.alive, self._start = name, alive, start

    def start(self) -> None:
        self._start()

    def down(self) -> str | None:
        return None if self.alive() else "is not answering"

    def signal(self, sig: int) -> None:
        """Not ours to stop: the Makefile stops the embedded services after the runner."""

    def wait(self, timeout: float) -> bool:
        return True


@dataclass
class _State:
    unit: Child | Daemon
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    said_capped: bool = field(default=False)
    checked_at: float = 0.0
    unhealthy_since: float | None = None
    hung_at: float | None = None  # when it was told to stop for not being healthy


class Supervisor:
    def __init__(
        self,
        units: list[Child | Daemon],
        *,
        backoff: Backoff | None = None,
        poll: float = 0.2,
        grace: float = 15.0,
        check_every: float = 5.0,
        hung_after: float = 120.0,
        say: Callable[[str], None] | None = None,
    ):
        self.states = [_State(unit) for unit in units]
        self.backoff = backoff or Backoff()
        self.poll, self.grace = poll, grace
        self.check_every, self.hung_after = check_every, hung_after
        self.say = say or (lambda message: print(message, file=sys.stderr, flush=True))
        self.stopping = False
        self.restarts = 0

    def stop(self, *_signal_args) -> None:
        """Ask the loop to stop everything; safe to call from a signal handler."""
        self.stopping = True

    def run(self) -> None:
        """Start every unit, keep them running until stop(), then stop the children."""
        now = time.monotonic()
        for state in self.states:
            self._start(state, now, first=True)
        while not self.stopping:
            self.tick(time.monotonic())
            time.sleep(self.poll)
        self.shutdown()

    def tick(self, now: float) -> None:
        for state in self.states:
            if self.stopping:
                return
            if state.restart_at is None:
                why = state.unit.down()
                if why is not None:
                    self._crashed(state, why, now)
                elif state.unit.healthy is not None:
                    self._check(state, now)
            elif now >= state.restart_at:
                self._start(state, now)

    def _check(self, state: _State, now: float) -> None:
        if state.hung_at is not None:
            if now - state.hung_at >= self.grace:
                state.unit.signal(signal.SIGKILL)
            return
        if now - state.checked_at < self.check_every:
            return
        state.checked_at = now
        try:
            healthy = state.unit.healthy()
        except Exception:  # a check that cannot tell is not a reason to kill anything
            healthy = True
        if healthy:
            state.unhealthy_since = None
            return
        if state.unhealthy_since is None:
            state.unhealthy_since = now
        if now - state.unhealthy_since >= self.hung_after:
            self.say(f"{state.unit.name} is running but not working (unhealthy for {self.hung_after:g} s); stopping it")
            state.hung_at = now
            state.unit.signal(signal.SIGTERM)

    def _crashed(self, state: _State, why: str, now: float) -> None:
        if now - state.started_at >= self.backoff.healthy_after:
            state.failures, state.said_capped = 0, False
        state.failures += 1
        delay = self.backoff.delay(state.failures)
        state.restart_at = now + delay
        name = state.unit.name
        if delay >= self.backoff.cap:
            if not state.said_capped:
                self.say(
                    f"{name} {why} again ({state.failures} times in a row); it keeps crashing, so it is retried"
                    f" every {delay:g} s from now on: see its messages above"
                )
                state.said_capped = True
            return
        self.say(f"{name} {why}; restarting it in {delay:g} s")

    def _start(self, state: _State, now: float, first: bool = False) -> None:
        name = state.unit.name
        try:
            state.unit.start()
        except (Exception, SystemExit) as exc:  # a start that fails is a crash like any other: retried with backoff
            state.started_at = now
            self._crashed(state, f"could not start ({exc})", now)
            return
        state.started_at, state.restart_at = now, None
        state.unhealthy_since = state.hung_at = None
        if state.unit.up_when_started:
            state.failures, state.said_capped = 0, False
        if not first:
            self.restarts += 1
            if not state.said_capped:
                self.say(f"{name} restarted")

    def shutdown(self) -> None:
        units = [state.unit for state in self.states]
        for unit in units:
            unit.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for unit in units:
            if not unit.wait(deadline - time.monotonic()):
                self.say(f"{unit.name} did not stop within {self.grace:g} s; killing it")
                unit.signal(signal.SIGKILL)
                unit.wait(5.0)
