"""The public-key endpoints a site calls: events (and decide). Plain Django views, not DRF: they
are the hot path and need none of DRF's machinery. Any origin may call them (the key is public)."""

import orjson
import redis
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from personalization import auth, services
from personalization import decide as decide_runtime
from personalization.event_schema import MAX_BATCH, BatchError

# Browsers need only Allow-Origin on the answer itself; the rest is for the preflight. Each header
# costs a few µs of Django's header validation, on every decide.
_PREFLIGHT = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Sec-GPC",
    "Access-Control-Max-Age": "86400",
}
MAX_BODY_BYTES = 2_000_000


def json_response(data: dict, status: int = 200) -> HttpResponse:
    response = HttpResponse(orjson.dumps(data), content_type="application/json", status=status)
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _preflight() -> HttpResponse:
    response = json_response({}, status=204)
    for name, value in _PREFLIGHT.items():
        response[name] = value
    return response


def error(status: int, field: str, message: str) -> HttpResponse:
    return json_response({"error": {"field": field, "message": message}}, status=status)


def public_key_required(view):
    """Resolves the public (or secret) key into request.key_info, answering CORS preflights."""

    def wrapper(request: HttpRequest) -> HttpResponse:
        if request.method == "OPTIONS":
            return _preflight()
        if request.method != "POST":
            return error(405, "method", "use POST")
        raw = auth.key_from_request(request)
        if not raw:
            return error(401, "Authorization", "send your public key as `Authorization: Bearer kp_…`")
        info = auth.api_key_lookup(raw)
        if info is None:
            return error(401, "Authorization", "unknown or revoked key; create one under Settings → API keys")
        request.key_info = info
        return view(request)

    return csrf_exempt(wrapper)


def body_json(request: HttpRequest):
    """The request body as JSON, whatever the content type (sendBeacon sends text/plain)."""
    if len(request.body) > MAX_BODY_BYTES:
        raise BatchError("body", f"is larger than {MAX_BODY_BYTES} bytes; send at most {MAX_BATCH} events")
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise BatchError("body", f"is not valid JSON ({exc.msg} at position {exc.pos})") from None


@public_key_required
def events(request: HttpRequest) -> HttpResponse:
    info = request.key_info
    try:
        result = services.events_ingest(
            project_id=info.project_id,
            payload=body_json(request),
            pipe_extra=lambda pipe: auth.last_used_note(pipe, info),
        )
    except BatchError as exc:
        return error(400, exc.field, exc.message)
    except redis.RedisError:
        response = error(503, "service", "events cannot be stored right now; retry the same batch shortly")
        response["Retry-After"] = "2"
        return response
    body = {
        "accepted": len(result.accepted),
        "rejected": result.rejected,
        "dropped_noise": result.dropped_noise,
        "duplicates": result.duplicates,
    }
    status = 400 if result.rejected and not result.accepted else 200
    return json_response(body, status=status)


@public_key_required
def decide(request: HttpRequest) -> HttpResponse:
    try:
        body = body_json(request)
        gpc = request.META.get("HTTP_SEC_GPC") == "1"
        answer = decide_runtime.decide(request.key_info.project_id, body, gpc=gpc)
        decide_runtime.buffer.note_key(request.key_info.key_id)
    except BatchError as exc:
        return error(400, exc.field, exc.message)
    except decide_runtime.DecideInputError as exc:
        return error(400, exc.field, exc.message)
    return json_response(answer)


def ping(request: HttpRequest) -> HttpResponse:
    """A trivial endpoint on the same server and settings, the baseline of the decide benchmark."""
    return json_response({"ok": True})
