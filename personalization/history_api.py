"""`POST /api/v1/events/import`: history of any age, with a secret key, streamed both ways.

The body (JSONL, or CSV with `?format=csv`) is read a line at a time and sent on in batches of
1,000; the answer is NDJSON: one progress line per batch, then the totals with `"done": true`.
"""

import orjson
import redis
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from personalization import auth
from personalization.public_api import error
from personalization.services.history import ImportFormatError, events_import_steps
from personalization.throttle import Throttled


def _line(data: dict) -> bytes:
    return orjson.dumps(data) + b"\n"


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

    def answer():
        # Iterating the request reads the body a line at a time, never all of it at once.
        steps = events_import_steps(project_id=info.project_id, lines=iter(request), fmt=fmt)
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
