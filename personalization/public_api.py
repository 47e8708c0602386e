"""The public-key endpoints a site calls: events (and decide). Plain Django views, not DRF: they
are the hot path and need none of DRF's machinery. Any origin may call them (the key is public).

Every answer, errors included, is JSON with the CORS header, so a browser script can read it.
"""

from itertools import chain

import orjson
import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from personalization import services, throttle
from personalization.decide import batch as decide_batch_runtime
from personalization.decide import batch_csv
from personalization.decide import runtime as decide_runtime
from personalization.ingest.schema import MAX_BATCH, BatchError
from personalization.workspace import auth

# Browsers need only Allow-Origin on the answer itself; the rest is for the preflight. Each header
# costs a few µs of Django's header validation, on every decide.
_PREFLIGHT = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Sec-GPC, X-API-Key, If-None-Match",
    "Access-Control-Max-Age": "86400",
}
MAX_BODY_BYTES = 2_000_000
MAX_DISCARD_BYTES = 64_000_000  # read past the limit only to answer 413 cleanly; see _discard
_READ_CHUNK = 65536


class BodyError(Exception):
    """The request body cannot be used: 400, or 413 when it is too large."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


def json_response(data: dict, status: int = 200) -> HttpResponse:
    response = HttpResponse(orjson.dumps(data), content_type="application/json", status=status)
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _preflight() -> HttpResponse:
    response = json_response({}, status=204)
    for name, value in _PREFLIGHT.items():
        response[name] = value
    return response


def error(status: int, field: str, message: str, retry_after: int | None = None) -> HttpResponse:
    response = json_response({"error": {"field": field, "message": message}}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _too_large(limit: int) -> BodyError:
    hint = f"send at most {MAX_BATCH} events a batch" if limit == MAX_BODY_BYTES else "split it into smaller calls"
    return BodyError(413, "body", f"is larger than {limit:,} bytes; {hint}")


def body_read(request: HttpRequest, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, at most `limit` bytes. A declared length over it is refused before reading
    (Django would answer its own HTML 400 past DATA_UPLOAD_MAX_MEMORY_SIZE); a chunked body, which
    has no length and which Django reads as empty, is read from the server's stream up to the limit."""
    meta = request.META
    declared = meta.get("CONTENT_LENGTH")
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise BodyError(400, "Content-Length", "is not a number of bytes") from None
        if length > limit:
            _discard(meta["wsgi.input"], length)
            raise _too_large(limit)
        return request.body
    if "chunked" not in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return b""
    stream, parts, size = meta["wsgi.input"], [], 0
    while chunk := stream.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            _discard(stream, MAX_DISCARD_BYTES)
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _discard(stream, length: int) -> None:
    """Read and drop what the client is still sending, so it gets to read the 413: a server that
    closes with unread bytes resets the connection and the answer is lost (the client sees a broken
    pipe). Past MAX_DISCARD_BYTES the connection is closed anyway."""
    left = min(length, MAX_DISCARD_BYTES)
    while left > 0 and (chunk := stream.read(min(_READ_CHUNK, left))):
        left -= len(chunk)


def body_json(request: HttpRequest, limit: int = MAX_BODY_BYTES, example: str = '{"events": [...]}'):
    """The request body as JSON, whatever the content type (sendBeacon sends text/plain). `example`:
    the shape the endpoint takes, shown in the message refusing a body that is not JSON."""
    raw = body_read(request, limit)
    if not raw:
        raise BodyError(400, "body", f"is empty; send a JSON object like {example}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BodyError(
            400, "body", f"is not valid UTF-8 JSON ({exc.msg} at position {exc.pos}); send a JSON object like {example}"
        ) from None


def _key_check(raw: str) -> HttpResponse | auth.KeyInfo:
    """The key's info, or the answer refusing it."""
    if raw.startswith("ks_"):  # refused without a lookup
        return _key_refused(raw, None)
    try:
        info = auth.public_key_lookup(raw)
    except auth.KeysUnavailable:
        return error(503, "service", "keys cannot be checked right now; retry shortly", retry_after=2)
    return _key_refused(raw, info) or info


def _key_refused(raw: str, info: auth.KeyInfo | None) -> HttpResponse | None:
    if raw.startswith("ks_") or (info is not None and info.kind == "secret"):
        return error(
            403,
            "Authorization",
            "this is a secret key (ks_…), which must never leave your servers; send the project's public key"
            " (kp_…) here, and revoke this secret key under Settings → API keys if it was in a page",
        )
    if info is None:
        return error(401, "Authorization", "unknown or revoked key; create one under Settings → API keys")
    return None


def public_key_required(
    view=None, *, max_body: int = MAX_BODY_BYTES, body=None, body_error=error, example: str = '{"events": [...]}'
):
    """Answers CORS preflights, reads the body (request.json), and resolves the public key — from the
    Authorization header, or from a "key" field in the body (sendBeacon cannot set headers) — into
    request.key_info. Keys in the URL are refused: URLs end up in logs and browser history.

    `body(request)` reads the body instead of JSON parsing (the export's CSV of ids), `body_error`
    shapes a refused body (OFREP has its own error body; it gets the view's URL arguments too);
    `max_body` is the body's size limit."""
    if view is None:
        return lambda view: public_key_required(
            view, max_body=max_body, body=body, body_error=body_error, example=example
        )
    read = body or (lambda request: body_json(request, max_body, example))

    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "OPTIONS":
            return _preflight()
        if request.method != "POST":
            return error(405, "method", "use POST")
        if request.META.get("QUERY_STRING") and "key" in request.GET:
            return error(
                400,
                "key",
                "keys are not accepted in the URL (URLs end up in logs); send `Authorization: Bearer kp_…`,"
                ' or a "key" field in the JSON body where headers cannot be set (sendBeacon)',
            )
        header = request.META.get("HTTP_AUTHORIZATION", "")
        raw = header[7:].strip() if header.startswith("Bearer ") else ""
        try:
            if raw:  # the key first: an unknown caller gets no body parsing
                info = _key_check(raw)
                if isinstance(info, HttpResponse):
                    return info
            request.json = read(request)
        except BodyError as exc:
            return body_error(exc.status, exc.field, exc.message, **kwargs)
        if not raw:
            in_body = request.json.get("key") if isinstance(request.json, dict) else None
            if not isinstance(in_body, str) or not in_body:
                return error(401, "Authorization", "send your public key as `Authorization: Bearer kp_…`")
            info = _key_check(in_body)
            if isinstance(info, HttpResponse):
                return info
        request.key_info = info
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapper)


def request_ip(request: HttpRequest) -> str:
    return throttle.client_ip(request.META, settings.KAIROS_TRUSTED_PROXIES)


def caller_of(request: HttpRequest) -> dict:
    """What decide takes from the request besides the body: the key and address its limits count,
    the Global Privacy Control signal, the user agent (device class for targeting)."""
    meta = request.META
    return {
        "key_id": request.key_info.key_id,
        "ip": request_ip(request),
        "gpc": meta.get("HTTP_SEC_GPC") == "1",
        "user_agent": meta.get("HTTP_USER_AGENT", ""),
    }


@public_key_required
def events(request: HttpRequest) -> HttpResponse:
    info = request.key_info
    try:
        result = services.events_ingest(
            project_id=info.project_id,
            payload=request.json,
            key_id=info.key_id,
            ip=request_ip(request),
            pipe_extra=lambda pipe: auth.last_used_note(pipe, info),
            gpc=request.META.get("HTTP_SEC_GPC") == "1",
        )
    except BatchError as exc:
        return error(400, exc.field, exc.message)
    except throttle.Throttled as exc:
        return error(exc.status, exc.field, exc.message, retry_after=exc.retry_after)
    except redis.RedisError:
        return error(503, "service", "events cannot be stored right now; retry the same batch shortly", retry_after=2)
    body = {
        "accepted": len(result.accepted),
        "rejected": result.rejected,
        "dropped_noise": result.dropped_noise,
        "duplicates": result.duplicates,
        "warnings": result.warnings,
    }
    status = 400 if result.rejected and not result.accepted else 200
    return json_response(body, status=status)


@public_key_required(example='{"anonymous_id": "…", "context": {…}}')
def decide(request: HttpRequest) -> HttpResponse:
    info = request.key_info
    try:
        answer = decide_runtime.decide(info.project_id, request.json, **caller_of(request))
        decide_runtime.buffer.note_key(info.key_id)
    except decide_runtime.DecideInputError as exc:
        return error(400, exc.field, exc.message)
    except throttle.Throttled as exc:
        return error(exc.status, exc.field, exc.message, retry_after=exc.retry_after)
    return json_response(answer)


_BATCH_EXAMPLE = '{"units": ["u1", {"anonymous_id": "b2"}]}'
_EXPORT_EXAMPLE = _BATCH_EXAMPLE + " (or a CSV of ids, one a line, sent as Content-Type: text/csv)"


def _batch_start(request: HttpRequest, body, lines: list[int] | None = None) -> HttpResponse | object:
    """Batch decide's answers chunk by chunk, or the answer refusing the call (nothing decided).
    `lines`: the CSV line of each unit, so a refused unit is named by its line."""
    info = request.key_info
    try:
        chunks = decide_batch_runtime.decide_batch(info.project_id, body, **caller_of(request))
    except decide_runtime.DecideInputError as exc:
        return error(400, exc.field if lines is None else batch_csv.field_on_line(exc.field, lines), exc.message)
    except throttle.Throttled as exc:
        return error(exc.status, exc.field, exc.message, retry_after=exc.retry_after)
    decide_runtime.buffer.note_key(info.key_id)
    return chunks


def _streamed(lines, content_type: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type=content_type)
    response["Access-Control-Allow-Origin"] = "*"
    return response


@public_key_required(max_body=decide_batch_runtime.MAX_BODY_BYTES, example=_BATCH_EXAMPLE)
def decide_batch(request: HttpRequest) -> HttpResponse:
    """NDJSON: one line per unit, in the order given, each a single decide's answer with its unit."""
    chunks = _batch_start(request, request.json)
    if isinstance(chunks, HttpResponse):
        return chunks
    lines = (b"".join(orjson.dumps(answer) + b"\n" for answer in chunk) for chunk in chunks)
    return _streamed(lines, "application/x-ndjson")


def _export_body(request: HttpRequest):
    """A JSON body as batch decide's, or a CSV of ids (text/csv; experiences in `?experiences=a,b`)."""
    if request.content_type != "text/csv":
        return body_json(request, decide_batch_runtime.MAX_BODY_BYTES, example=_EXPORT_EXAMPLE)
    try:
        text = body_read(request, decide_batch_runtime.MAX_BODY_BYTES).decode()
    except UnicodeDecodeError:
        raise BodyError(400, "body", "is not UTF-8 text; save the CSV of ids as UTF-8") from None
    try:
        units, request.csv_lines = batch_csv.ids_read(text)
    except batch_csv.IdsError as exc:
        raise BodyError(400, exc.field, exc.message) from None
    body: dict = {"units": units}
    if experiences := request.GET.get("experiences"):
        body["experiences"] = [key.strip() for key in experiences.split(",") if key.strip()]
    return body


@public_key_required(body=_export_body)
def decide_export(request: HttpRequest) -> HttpResponse:
    """CSV: one row per unit and experience (batch_csv.EXPORT_HEADER), from a batch decide."""
    chunks = _batch_start(request, request.json, getattr(request, "csv_lines", None))
    if isinstance(chunks, HttpResponse):
        return chunks
    parts = chain([[batch_csv.EXPORT_HEADER]], (batch_csv.export_rows(chunk) for chunk in chunks))
    response = _streamed(("".join(batch_csv.csv_lines(part)) for part in parts), "text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="decide-export.csv"'
    return response


def ping(request: HttpRequest) -> HttpResponse:
    """A trivial endpoint on the same server and settings, the baseline of the decide benchmark."""
    return json_response({"ok": True})
