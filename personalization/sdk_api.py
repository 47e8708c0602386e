"""The server SDK's endpoints on the decide service: the project's compiled snapshot (for local
evaluation with the same engine decide runs) and a server-sent-events stream that says when it
changed. Secret key only: the snapshot holds every salt, holdout share and targeting rule, so
whoever has it can predict and steer assignments; it must never reach a browser.

The stream polls the snapshot's version key (one GET every POLL_SECONDS): there is no pub/sub for
snapshots, and a GET per half second per server SDK is nothing beside decide's traffic. A stream
holds one of the worker's blocking threads (granian WSGI), so each process serves at most
MAX_STREAMS at once (the rest get 503 and poll the snapshot with If-None-Match instead), and every
stream ends after at most STREAM_SECONDS (the SDK reconnects at once).
"""

import threading
import time

import orjson
import redis
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from personalization import redis_client, rkeys
from personalization.public_api import error
from personalization.workspace import auth

POLL_SECONDS = 0.5
STREAM_SECONDS = 55.0  # under the usual 60 s idle timeout of proxies, so a stream ends on our side
KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 1  # of granian's 2 blocking threads per worker: the other one keeps answering decide
_streams = threading.BoundedSemaphore(MAX_STREAMS)


def _secret_key(request: HttpRequest) -> HttpResponse | auth.KeyInfo:
    """The secret key's info, or the answer refusing the request."""
    if request.method != "GET":
        return error(405, "method", "use GET")
    header = request.META.get("HTTP_AUTHORIZATION", "")
    raw = header[7:].strip() if header.startswith("Bearer ") else ""
    if not raw:
        return error(401, "Authorization", "send the project's secret key as `Authorization: Bearer ks_…`")
    try:
        info = auth.api_key_lookup(raw)
    except auth.KeysUnavailable:
        return error(503, "service", "keys cannot be checked right now; retry shortly", retry_after=2)
    if info is None:
        return error(401, "Authorization", "unknown or revoked key; create one under Settings → API keys")
    if info.kind != "secret":
        return error(
            403,
            "Authorization",
            "this is a public key (kp_…); the snapshot holds the project's salts and targeting, so it is served"
            " only for a secret key (ks_…), to your servers",
        )
    return info


def _version_tag(version: bytes | str) -> str:
    return f'"{version.decode() if isinstance(version, bytes) else version}"'


def snapshot(request: HttpRequest) -> HttpResponse:
    """GET /api/v1/sdk/snapshot: the compiled snapshot as decide reads it (ETag: its version)."""
    info = _secret_key(request)
    if isinstance(info, HttpResponse):
        return info
    client = redis_client.fast()
    try:
        version = client.get(rkeys.snapshot_version(info.project_id))
        tag = _version_tag(version) if version is not None else None
        if tag is not None and tag in request.META.get("HTTP_IF_NONE_MATCH", ""):
            response = HttpResponse(status=304)
            response["ETag"] = tag
            return response
        # One command for both, so the body and its ETag are of the same publish.
        raw, version = client.mget(rkeys.snapshot(info.project_id), rkeys.snapshot_version(info.project_id))
    except redis.RedisError:
        return error(503, "service", "the snapshot cannot be read right now; keep the one you have", retry_after=2)
    if raw is None or version is None:
        return error(404, "snapshot", "no snapshot published yet: start an experience, then fetch again")
    response = HttpResponse(raw, content_type="application/json")
    response["ETag"] = _version_tag(version)
    return response


class _VersionStream:
    """The SSE body: "version" with the current version first, then "changed" with each new one,
    a comment every KEEPALIVE_SECONDS, and "bye" when the lifetime is over. Releases its stream
    slot on close (Django closes the iterable when the response ends, read or not)."""

    def __init__(self, project_id: int, seconds: float):
        self.project_id, self.seconds = project_id, seconds
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _streams.release()

    def __iter__(self):
        client = redis_client.fast()
        name = rkeys.snapshot_version(self.project_id)
        started = last_sent = time.monotonic()
        sent = None
        yield b"retry: 1000\n\n"
        while time.monotonic() - started < self.seconds:
            try:
                version = client.get(name)
            except redis.RedisError:
                version = sent  # Redis away: say nothing new; the SDK keeps its snapshot
            if version is not None and version != sent:
                event = "version" if sent is None else "changed"
                sent = version
                last_sent = time.monotonic()
                yield f"event: {event}\ndata: {orjson.dumps({'version': int(version)}).decode()}\n\n".encode()
            elif time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                last_sent = time.monotonic()
                yield b": keepalive\n\n"
            time.sleep(POLL_SECONDS)
        yield b'event: bye\ndata: {"reconnect": true}\n\n'


def snapshot_events(request: HttpRequest) -> HttpResponse:
    """GET /api/v1/sdk/snapshot/events: server-sent events on the snapshot's version.
    `?seconds=` shortens the stream's lifetime (at most STREAM_SECONDS)."""
    info = _secret_key(request)
    if isinstance(info, HttpResponse):
        return info
    try:
        seconds = float(request.GET.get("seconds", STREAM_SECONDS))
    except ValueError:
        return error(400, "seconds", f"must be a number of seconds, 1 to {STREAM_SECONDS:g}")
    if not 1 <= seconds <= STREAM_SECONDS:
        return error(400, "seconds", f"must be a number of seconds, 1 to {STREAM_SECONDS:g}")
    if not _streams.acquire(blocking=False):
        return error(
            503,
            "service",
            "this decide process serves its most streams already; poll GET /api/v1/sdk/snapshot with If-None-Match",
            retry_after=int(STREAM_SECONDS),
        )
    response = StreamingHttpResponse(_VersionStream(info.project_id, seconds), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the events back
    return response
