"""`POST /api/v1/events/import`: history of any age, with a secret key, streamed both ways.

The body (JSONL, or CSV with `?format=csv`) is read 64 KiB at a time, split into lines and sent on
in batches of 1,000; the answer is NDJSON: one progress line per batch, then the totals with
`"done": true`. Any Content-Type is taken (curl's `--data-binary` sends a form type): the body is
read from the server's stream itself, never parsed as a form.
"""

from collections.abc import Iterator

import orjson
import redis
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from personalization.ingest.history import READ_BYTES, ImportFormatError, events_import_steps
from personalization.public_api import error
from personalization.throttle import Throttled
from personalization.workspace import auth


def _line(data: dict) -> bytes:
    return orjson.dumps(data) + b"\n"


def _body_pieces(stream, length: int | None) -> Iterator[bytes]:
    """The body straight from the server's input stream: `length` bytes (its Content-Length), or
    until the end when it is sent chunked (None). Django's request stream is not used: it reads a
    chunked body as empty, and its line reading goes through granian's readline, which returns only
    the first line."""
    left = length
    while left is None or left > 0:
        piece = stream.read(READ_BYTES if left is None else min(READ_BYTES, left))
        if not piece:
            return
        if left is not None:
            left -= len(piece)
        yield piece


@csrf_exempt
def events_import_view(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error(405, "method", "use POST with the file as the body")
    header = request.META.get("HTTP_AUTHORIZATION", "")
    raw = header[7:].strip() if header.startswith("Bearer ") else ""
    info = auth.api_key_lookup(raw) if raw else None
    if info is None:
        return error(401, "Authorization", "send a secret key as `Authorization: Bearer ks_…` (Settings → API keys)")
    if info.kind != "secret":
        return error(403, "Authorization", "history import needs a secret key (ks_…), not a public key")
    fmt = request.GET.get("format", "jsonl")
    if fmt not in ("jsonl", "csv"):
        return error(400, "format", "use format=jsonl (one event object per line, the default) or format=csv")

    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared and not declared.isdigit():
        return error(400, "Content-Length", "is not a number of bytes")
    if not declared and "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return error(400, "body", "is empty; send the file as the body (curl --data-binary @history.jsonl)")
    body = _body_pieces(request.META["wsgi.input"], int(declared) if declared else None)

    def answer():
        steps = events_import_steps(project_id=info.project_id, body=body, fmt=fmt)
        last = None
        try:
            for last in steps:
                yield _line({"done": False, "lines": last.lines, "accepted": last.accepted})
        except ImportFormatError as exc:
            yield _line({"done": True, "error": {"field": "body", "message": str(exc)}})
            return
        except (redis.RedisError, Throttled):
            message = "the event stream is unavailable; send the same file again shortly (nothing is stored twice)"
            yield _line({"done": True, "error": {"field": "service", "message": message}})
            return
        yield _line({"done": True, **last.as_dict()})

    response = StreamingHttpResponse(answer(), content_type="application/x-ndjson")
    response["X-Accel-Buffering"] = "no"  # let a proxy pass progress lines on as they come
    return response
