"""Live visitors for the demo shop: `manage.py demo_traffic --url http://127.0.0.1:8001 [--rate 10]`.

Each visit asks the real decide endpoint for its variants, then browses like its planted intent
(demo.world) and maybe buys, with the chance set by the variants it actually received.
A visit's events are sent as one batch to the real events endpoint when the visit ends, with their
true timestamps, so the dashboard sees events arrive as they happen and every purchase comes after
its exposure. Most visitors are the seeded demo profiles ("d123"); some are new anonymous ones.

Never exits on its own (unless --duration is set): no server yet → waits and retries; no decide
endpoint (404) → says so once and keeps sending events; keys replaced by `demo_seed --reset` → reloads
them. Ctrl-C or SIGTERM sends what has already happened and exits.
"""

import contextlib
import heapq
import http.client
import itertools
import json
import secrets
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import orjson
from django.core.management.base import BaseCommand

from demo import world as demo
from personalization.ingest.schema import MAX_BATCH

NEW_VISITOR_SHARE = 0.15
RETURNING_NEW_SHARE = 0.3  # of new-visitor slots: someone who came earlier in this run, back again
NEW_VISITOR_MEMORY = 2000
LOGGED_IN_SHARE = 0.7  # of visits by customers with an account
MAX_VISIT_SECONDS = 15 * 60  # longer visits are compressed: events may not be dated in the future
DECIDE_RETRY_SECONDS = 30.0
MAX_PENDING_EVENTS = 50_000
REPORT_EVERY_SECONDS = 60.0


class _Unavailable(Exception):
    """The server cannot be reached (not started yet, restarting)."""


class _KeysStale(Exception):
    """The public key was refused: the demo was probably recreated with new keys."""


class _Client:
    """One keep-alive HTTP connection, reopened after any error."""

    def __init__(self, url: str, timeout: float = 5.0):
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"--url must look like http://127.0.0.1:8001, not {url!r}")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict, key: str) -> tuple[int, dict]:
        data = orjson.dumps(body)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        for attempt in range(2):  # a kept-alive connection the server closed fails once; retry on a new one
            if self.conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                self.conn = cls(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", self.base + path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 1 or isinstance(exc, ConnectionRefusedError):
                    raise _Unavailable(str(exc)) from None
                continue
            try:
                answer = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                answer = {}
            return response.status, answer if isinstance(answer, dict) else {}
        raise _Unavailable("no answer")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Traffic:
    """The visit loop. Separate from the command so it can be driven from a test."""

    def __init__(self, *, url: str, rate: float, keys_file: Path, say, stop: threading.Event):
        self.client = _Client(url)
        self.url = url
        self.rate = rate
        self.keys_file = keys_file
        self.say = say
        self.stop = stop
        self.rng = np.random.default_rng()
        self.run_id = secrets.token_hex(3)
        self.keys: dict = {}
        self.population: list[demo.DemoProfile] = []
        self.returning_cumulative = np.zeros(0)
        self.newcomers: list[demo.DemoProfile] = []
        self.newcomer_ids = itertools.count(1)
        # Visits waiting for their end: (send at, visit number, [(event time, API event)]), a heap.
        self.pending: list[tuple[float, int, list[tuple[datetime, dict]]]] = []
        self.pending_events = 0
        self.visits = 0
        self.decide_missing_until = 0.0
        self.said: set[str] = set()
        self.stats = {"decisions": 0, "visits": 0, "events": 0, "purchases": 0, "errors": 0}

    def once(self, key: str, message: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.say(message)

    # -- keys and population ------------------------------------------------------------------
    def keys_load(self) -> bool:
        try:
            keys = json.loads(self.keys_file.read_text())
            if not (isinstance(keys.get("public_key"), str) and isinstance(keys.get("profiles"), int)):
                raise ValueError("incomplete keys file")
            keys.setdefault("seed", 7)
        except (OSError, ValueError, AttributeError):
            self.once("keys", f"waiting for {self.keys_file} (run `manage.py demo_seed`)")
            return False
        if (keys["profiles"], keys["seed"]) != (self.keys.get("profiles"), self.keys.get("seed")):
            self.population = demo.profiles_generate(keys["profiles"], seed=keys["seed"])
            # Frequent visitors come back more often: weight by their intent's visits per fortnight.
            weights = np.array([demo.INTENTS[p.intent].sessions for p in self.population])
            self.returning_cumulative = np.cumsum(weights / weights.sum())
        self.keys = keys
        self.said.discard("keys")
        return True

    def visitor(self) -> demo.DemoProfile:
        u = self.rng.random()
        if u >= NEW_VISITOR_SHARE or not self.population:
            index = int(np.searchsorted(self.returning_cumulative, self.rng.random(), side="right"))
            return self.population[min(index, len(self.population) - 1)]
        if self.newcomers and u < NEW_VISITOR_SHARE * RETURNING_NEW_SHARE:
            return self.newcomers[int(self.rng.integers(len(self.newcomers)))]
        profile = demo.profile_make(-1, self.rng, anonymous_id=f"v{self.run_id}-{next(self.newcomer_ids)}")
        profile.user_id = None
        profile.attributes["plan"] = "guest"
        self.newcomers.append(profile)
        if len(self.newcomers) > NEW_VISITOR_MEMORY:
            self.newcomers.pop(0)
        return profile

    # -- one visit ------------------------------------------------------------------------------
    def decide(self, profile: demo.DemoProfile) -> dict:
        """The variants decide gives this visitor, or {} (everything default) when it cannot answer."""
        if time.monotonic() < self.decide_missing_until:
            return {}
        body = {
            "anonymous_id": profile.anonymous_id,
            "context": {"url": "/", "device": profile.attributes.get("device", "desktop"), "attributes": {}},
        }
        status, answer = self.client.post("/api/v1/decide", body, self.keys["public_key"])
        if status == 200:
            self.stats["decisions"] += 1
            self.said.discard("decide404")
            return answer.get("assignments") or {}
        if status == 401:
            raise _KeysStale
        if status == 404:
            self.once("decide404", f"{self.url}/api/v1/decide answers 404: sending events without assignments")
            self.decide_missing_until = time.monotonic() + DECIDE_RETRY_SECONDS
        else:
            self.stats["errors"] += 1
            self.once(f"decide{status}", f"decide answered {status}: {answer.get('error') or answer}")
        return {}

    def visit(self) -> None:
        profile = self.visitor()
        assignments = self.decide(profile)
        self.visits += 1
        start = datetime.now(UTC)
        session_id = f"t{self.run_id}-{self.visits}"
        events = demo.session_events(profile, self.rng, start=start, shown=assignments, session_id=session_id)
        span = (events[-1]["ts"] - start).total_seconds()
        if span > MAX_VISIT_SECONDS:
            scale = MAX_VISIT_SECONDS / span
            for event in events:
                event["ts"] = start + (event["ts"] - start) * scale
            span = MAX_VISIT_SECONDS
        logged_in = profile.user_id if profile.user_id and self.rng.random() < LOGGED_IN_SHARE else None
        batch = [(e["ts"], demo.api_event(e, anonymous_id=profile.anonymous_id, user_id=logged_in)) for e in events]
        heapq.heappush(self.pending, (time.monotonic() + span, self.visits, batch))
        self.pending_events += len(batch)
        self.stats["visits"] += 1
        self.stats["purchases"] += events[-1]["type"] == "purchase"

    # -- sending events -------------------------------------------------------------------------
    def send_due(self, *, until: float) -> None:
        """Send the visits that have ended, several to a batch (a visit is never split)."""
        while self.pending and self.pending[0][0] <= until:
            batch: list[dict] = []
            taken = []
            while self.pending and self.pending[0][0] <= until and len(batch) + len(self.pending[0][2]) <= MAX_BATCH:
                item = heapq.heappop(self.pending)
                taken.append(item)
                batch.extend(event for _, event in item[2])
            if not batch:  # a single visit larger than a batch cannot happen (a few dozen events at most)
                heapq.heappop(self.pending)
                continue
            try:
                status, answer = self.client.post("/api/v1/events", {"events": batch}, self.keys["public_key"])
            except _Unavailable:
                for item in taken:  # try again later, in order
                    heapq.heappush(self.pending, item)
                raise
            if status == 401:
                for item in taken:
                    heapq.heappush(self.pending, item)
                raise _KeysStale
            if status == 503:
                for item in taken:
                    heapq.heappush(self.pending, (time.monotonic() + 2.0, item[1], item[2]))
                return
            self.pending_events -= len(batch)
            if status == 200:
                self.stats["events"] += int(answer.get("accepted", 0))
                if answer.get("rejected"):
                    self.once("rejected", f"events rejected, e.g. {answer['rejected'][0]}")
            else:
                self.stats["errors"] += 1
                self.once(f"events{status}", f"events answered {status}: {answer.get('error') or answer}")

    def drop_excess(self) -> None:
        """While the server is away, keep at most MAX_PENDING_EVENTS; the oldest visits go first."""
        while self.pending_events > MAX_PENDING_EVENTS and self.pending:
            item = heapq.heappop(self.pending)
            self.pending_events -= len(item[2])

    def flush_at_exit(self) -> None:
        """Send what has happened so far of the unfinished visits (visitors leaving mid-visit)."""
        now = datetime.now(UTC)
        for item in self.pending:
            item[2][:] = [(ts, event) for ts, event in item[2] if ts <= now]
        self.pending = [item for item in self.pending if item[2]]
        heapq.heapify(self.pending)
        with contextlib.suppress(_Unavailable, _KeysStale):  # one attempt: the server may be stopping too
            self.send_due(until=float("inf"))

    # -- main loop ------------------------------------------------------------------------------
    def run(self, duration: float) -> dict:
        deadline = time.monotonic() + duration if duration > 0 else float("inf")
        next_visit = time.monotonic()
        next_report = time.monotonic() + REPORT_EVERY_SECONDS
        backoff = 0.5
        while not self.stop.is_set() and time.monotonic() < deadline:
            if not self.keys and not self.keys_load():
                self.stop.wait(2.0)
                continue
            now = time.monotonic()
            try:
                if now >= next_visit:
                    self.visit()
                    next_visit += 1.0 / self.rate
                    if next_visit < now - 1.0:  # fell behind (slow server): do not burst to catch up
                        next_visit = now
                self.send_due(until=now)
                backoff = 0.5
                self.said.discard("down")
            except _Unavailable as exc:
                self.once("down", f"cannot reach {self.url} ({exc}); retrying")
                self.drop_excess()
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                next_visit = time.monotonic()
                continue
            except _KeysStale:
                self.once("stale", "the demo key was refused; reloading the keys file (was the demo reset?)")
                self.keys = {}
                self.stop.wait(2.0)
                continue
            if now >= next_report:
                next_report = now + REPORT_EVERY_SECONDS
                self.say(self.summary())
            wake = min(next_visit, self.pending[0][0] if self.pending else next_visit, deadline)
            self.stop.wait(max(0.0, min(wake - time.monotonic(), 0.25)))
        if self.keys:
            self.flush_at_exit()
        self.client.close()
        return self.stats

    def summary(self) -> str:
        s = self.stats
        return (
            f"demo traffic: {s['visits']:,} visits, {s['decisions']:,} decisions, {s['events']:,} events,"
            f" {s['purchases']:,} purchases, {s['errors']:,} errors"
        )


class Command(BaseCommand):
    help = "Send realistic demo visitors to the decide and events endpoints until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8001", help="base URL of the decide/events server")
        parser.add_argument("--rate", type=float, default=10.0, help="visits (decide calls) per second (default 10)")
        parser.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 runs until stopped")
        parser.add_argument("--keys-file", type=Path, default=None, help="the demo keys (default var/demo-keys.json)")

    def handle(self, *args, url: str, rate: float, duration: float, keys_file: Path | None, **options):
        from demo.seed import demo_keys_path  # lazily: seed loads models; the traffic loop itself needs none

        if not 0 < rate <= 1000:
            self.stderr.write("--rate must be between 0 and 1000 visits per second")
            return
        stop = threading.Event()

        def stop_now(*_):
            stop.set()

        signal.signal(signal.SIGINT, stop_now)
        signal.signal(signal.SIGTERM, stop_now)

        def say(message: str) -> None:
            self.stdout.write(message)
            self.stdout.flush()

        traffic = Traffic(url=url, rate=rate, keys_file=keys_file or demo_keys_path(), say=say, stop=stop)
        say(f"demo traffic: {rate:g} visits/s to {url} (Ctrl-C stops)")
        traffic.run(duration)
        say(traffic.summary())
