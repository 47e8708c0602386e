"""KairosClient: downloads the project's snapshot (secret key), keeps it fresh over server-sent
events (polling with If-None-Match when the stream is refused or breaks), answers decide locally
with decide's own engine, and sends exposures to the public events API in batches.

Standard library only (urllib, threading) besides the engine's files.
"""

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from urllib import error as urlerror
from urllib import request as urlrequest

from kairos_sdk._engine import engine, live

log = logging.getLogger("kairos_sdk")

KINDS = ("user_id", "anonymous_id")
EVENTS_BATCH = 500  # the events API's batch limit
STICKY_UNITS = 100_000  # units whose recorded exposures the client remembers (see decide)


class KairosClient:
    """`base_url`: the decide service (e.g. http://decide:8001). `secret_key`: ks_… (the snapshot
    holds salts and targeting). `public_key`: kp_…, for sending exposures (the events API takes only
    public keys); without it no exposure is sent. `events_url` defaults to base_url's /api/v1/events.
    `poll_seconds`: how often the snapshot is fetched when the stream is not available.
    `stream=False` polls only. `start=False` leaves the background threads to `start()`."""

    def __init__(
        self,
        base_url: str,
        secret_key: str,
        *,
        public_key: str | None = None,
        events_url: str | None = None,
        poll_seconds: float = 10.0,
        stream: bool = True,
        stream_seconds: float | None = None,
        timeout: float = 5.0,
        flush_seconds: float = 1.0,
        max_queued: int = 10_000,
        start: bool = True,
    ):
        self.base_url = base_url.rstrip("/")
        for url in (self.base_url, events_url or self.base_url):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r}: give an http:// or https:// URL")  # urllib would open file: too
        self.secret_key, self.public_key = secret_key, public_key
        self.events_url = events_url or f"{self.base_url}/api/v1/events"
        self.poll_seconds, self.stream, self.timeout = poll_seconds, stream, timeout
        self.stream_seconds, self.flush_seconds = stream_seconds, flush_seconds
        self.snapshot: dict | None = None
        self.etag: str | None = None
        self.exposures: queue.Queue = queue.Queue(maxsize=max_queued)
        self.dropped = 0  # exposures not queued: the queue was full (the events API away for long)
        self.sent = 0
        self._sticky: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._response = None  # the open stream, closed by close() so the sync thread ends at once
        if start:
            self.start()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.refresh()
        for target, name in ((self._sync_run, "kairos-sync"), (self._send_run, "kairos-exposures")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout: float = 10.0) -> None:
        """Stop syncing and send every queued exposure (waits at most `timeout` seconds)."""
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(OSError):  # it was closing anyway
                response.close()
        _sync, sender = self._threads or (None, None)
        if sender is not None:
            sender.join(timeout)
        # The sync thread (a daemon) may sit in a stream read until the next keepalive: not waited for.
        self._send_batches(final=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def version(self) -> int | None:
        snapshot = self.snapshot
        return None if snapshot is None else snapshot.get("version")

    def wait_for_version(self, version: int, timeout: float) -> bool:
        """Block until the client holds snapshot `version` or newer (True), or `timeout` passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (self.version or 0) < version:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    # -- the snapshot ----------------------------------------------------------------------------

    def _get(self, path: str, headers: dict | None = None, timeout: float | None = None):
        req = urlrequest.Request(  # noqa: S310 (http(s) checked in __init__)
            f"{self.base_url}{path}", headers={"Authorization": f"Bearer {self.secret_key}", **(headers or {})}
        )
        return urlrequest.urlopen(req, timeout=timeout or self.timeout)  # noqa: S310 (http(s) checked in __init__)

    def refresh(self) -> bool:
        """Fetch the snapshot unless the held one is current (If-None-Match). True when it changed;
        on any failure the held snapshot stays (or, with none yet, decide answers defaults)."""
        try:
            with self._get("/api/v1/sdk/snapshot", {"If-None-Match": self.etag} if self.etag else None) as response:
                raw, etag = response.read(), response.headers.get("ETag")
        except urlerror.HTTPError as exc:
            if exc.code != 304:
                log.warning("kairos: snapshot not fetched (%s %s)", exc.code, exc.read()[:300])
            return False
        except (OSError, ValueError) as exc:
            log.warning("kairos: snapshot not fetched (%s)", exc)
            return False
        snapshot = json.loads(raw)
        engine.conditions_prepare(snapshot)  # as decide does on each load: targeting functions once
        with self._changed:
            self.snapshot, self.etag = snapshot, etag
            self._changed.notify_all()
        return True

    def _sync_run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.stream and self._stream_once():
                    continue  # the stream ended as planned (its lifetime): reconnect at once
            except Exception:
                # The sync thread must outlive any surprise, or the snapshot would silently go stale.
                log.exception("kairos: snapshot stream failed; polling")
            self._stop.wait(self.poll_seconds)
            self.refresh()

    def _stream_once(self) -> bool:
        """Follow one SSE stream; True when it ended normally, False when refused or broken."""
        path = "/api/v1/sdk/snapshot/events"
        if self.stream_seconds:
            path += f"?seconds={self.stream_seconds:g}"
        try:
            # A read timeout past the server's keepalive (15 s) notices a dead connection.
            with self._get(path, {"Accept": "text/event-stream"}, timeout=30) as response:
                self._response = response
                event = None
                for line in response:
                    if self._stop.is_set():
                        return True
                    line = line.rstrip(b"\r\n")
                    if line.startswith(b"event:"):
                        event = line[6:].strip().decode()
                    elif line.startswith(b"data:") and event in ("version", "changed"):
                        if json.loads(line[5:]).get("version") != self.version:
                            self.refresh()
                    elif event == "bye":
                        return True
            return True
        except Exception as exc:
            if self._stop.is_set():
                return True  # close() shut the connection under the read
            if not isinstance(exc, OSError | ValueError):
                raise
            log.info("kairos: snapshot stream unavailable (%s); polling every %s s", exc, self.poll_seconds)
            return False

    # -- decide ----------------------------------------------------------------------------------

    def decide(
        self,
        unit: str,
        *,
        attributes: dict | None = None,
        kind: str = "user_id",
        context: dict | None = None,
        experiences: list[str] | None = None,
        unit_state: dict | None = None,
        gpc: bool = False,
        user_agent: str = "",
    ) -> dict:
        """Decide's answer for `unit`, computed here: {"version", "assignments", "unknown_experiences"}.

        `unit_state`: the unit's Redis hash as decide would read it (HGETALL kr:{project}:u:{unit}:
        segments, scores, live session state, sticky assignments), str → str; without it the unit is
        evaluated as one decide knows nothing about, plus what this client decided for it before.
        Without a snapshot: every requested experience gets variant None, reason "fallback"."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        snapshot = self.snapshot
        if snapshot is None:
            return {
                "version": None,
                "assignments": {
                    k: {"variant": None, "payload": None, "reason": "fallback", "version": None}
                    for k in experiences or []
                },
                "unknown_experiences": [],
            }
        context = dict(context or {})
        if attributes:
            context["attributes"] = attributes
        user = self._user(unit, unit_state)
        facts = live.request_facts(user, context, settings=snapshot.get("live") or {}, user_agent=user_agent)
        decision = engine.decide_unit(snapshot, unit, user, context, experiences, gpc=gpc, live=facts)
        if decision.sticky_updates:
            self._remember(unit, decision.sticky_updates)
        if decision.exposures:
            self._expose(kind, unit, decision.exposures)
        return {
            "version": snapshot["version"],
            "assignments": decision.assignments,
            "unknown_experiences": decision.unknown,
        }

    def _user(self, unit: str, unit_state: dict | None) -> dict:
        """The hash the engine reads: what this client decided for the unit (its marks, so an
        exposure is sent once and a bandit's unit keeps its variant here), under `unit_state`."""
        with self._lock:
            mine = self._sticky.get(unit)
        if mine is None:
            return unit_state or {}
        return {**mine, **unit_state} if unit_state else mine

    def _remember(self, unit: str, updates: dict) -> None:
        with self._lock:
            self._sticky[unit] = {**self._sticky.get(unit, {}), **updates}
            self._sticky.move_to_end(unit)
            if len(self._sticky) > STICKY_UNITS:
                self._sticky.popitem(last=False)

    # -- exposures -------------------------------------------------------------------------------

    def _expose(self, kind: str, unit: str, exposures: list[dict]) -> None:
        if self.public_key is None:
            return
        ts = datetime.now(UTC).isoformat()
        for exposure in exposures:
            holdout = exposure["arm"] != "variant"
            properties = {"experience": exposure["experience"], "segment": exposure["segment"]}
            properties |= {"holdout": True} if holdout else {"variant": exposure["variant"]}
            event = {"event_id": f"s{uuid.uuid4().hex}", "type": "exposure", kind: unit, "timestamp": ts}
            try:
                self.exposures.put_nowait(event | {"properties": properties})
            except queue.Full:
                self.dropped += 1

    def _send_run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self._send_batches()

    def _send_batches(self, final: bool = False) -> None:
        """Send what is queued, EVENTS_BATCH at a time. A batch the API could not take goes back in
        the queue (retried next flush) unless this is the final flush, when it is logged as lost."""
        while True:
            batch = []
            while len(batch) < EVENTS_BATCH:
                try:
                    batch.append(self.exposures.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return
            if not self._post_events(batch):
                if final:
                    log.error("kairos: %d exposures could not be sent before close", len(batch))
                    return
                for event in batch:
                    try:
                        self.exposures.put_nowait(event)
                    except queue.Full:
                        self.dropped += 1
                return

    def _post_events(self, batch: list[dict]) -> bool:
        req = urlrequest.Request(  # noqa: S310 (http(s) checked in __init__)
            self.events_url,
            data=json.dumps({"events": batch}).encode(),
            headers={"Authorization": f"Bearer {self.public_key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urlrequest.urlopen(req, timeout=self.timeout):  # noqa: S310 (http(s) checked in __init__)
                pass
        except urlerror.HTTPError as exc:
            if exc.code == 400:  # refused as a whole (by field): resending would not help
                log.error("kairos: exposures refused: %s", exc.read()[:300])
                return True
            log.warning("kairos: exposures not sent (%s); retrying", exc.code)
            return False
        except OSError as exc:
            log.warning("kairos: exposures not sent (%s); retrying", exc)
            return False
        self.sent += len(batch)
        return True
