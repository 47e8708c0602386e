"""OpenFeature Remote Evaluation Protocol (OFREP v1) endpoints, served by the decide process beside
decide: `POST /ofrep/v1/evaluate/flags/{key}` and `POST /ofrep/v1/evaluate/flags` (bulk, with
ETag / If-None-Match). Each evaluation is a decide call (runtime.decide: the same Redis round trip,
engine, sticky writes and exposure events); personalization.decide.ofrep translates the shapes.

The key is the project's public key, as `Authorization: Bearer kp_…` (decide's header) or
`X-API-Key: kp_…` (OFREP's API key scheme).
"""

from django.http import HttpRequest, HttpResponse

from personalization import throttle
from personalization.decide import ofrep
from personalization.decide import runtime as decide_runtime
from personalization.public_api import caller_of, error, json_response, public_key_required


def _body_refused(status: int, field: str, message: str, key: str | None = None) -> HttpResponse:
    """A body that cannot be read, as an OFREP failure (413 keeps its status)."""
    return json_response(ofrep.OfrepError(status, "PARSE_ERROR", f"{field} {message}").body(key), status=status)


def _api_key_header(view):
    """OFREP's X-API-Key scheme, read as decide's Bearer header when that is absent."""

    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        api_key = request.META.get("HTTP_X_API_KEY")
        if api_key and not request.META.get("HTTP_AUTHORIZATION"):
            request.META["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
        return view(request, *args, **kwargs)

    wrapper.csrf_exempt = True
    return wrapper


def _decide(request: HttpRequest, experiences: list[str] | None) -> dict:
    """Decide's answer for the OFREP request; OfrepError for a request decide refuses."""
    info = request.key_info
    body = ofrep.decide_body(request.json, experiences)
    try:
        answer = decide_runtime.decide(info.project_id, body, **caller_of(request))
    except decide_runtime.DecideInputError as exc:
        raise ofrep.input_error(exc.field, exc.message) from None
    decide_runtime.buffer.note_key(info.key_id)
    return answer


@_api_key_header
@public_key_required(body_error=_body_refused, example=ofrep.EXAMPLE)
def evaluate_flag(request: HttpRequest, key: str) -> HttpResponse:
    try:
        return json_response(ofrep.single(key, _decide(request, [key])))
    except ofrep.OfrepError as exc:
        return json_response(exc.body(key), status=exc.status)
    except throttle.Throttled as exc:
        return error(exc.status, exc.field, exc.message, retry_after=exc.retry_after)


@_api_key_header
@public_key_required(body_error=_body_refused, example=ofrep.EXAMPLE)
def evaluate_flags(request: HttpRequest) -> HttpResponse:
    try:
        body, etag = ofrep.bulk(_decide(request, None))
    except ofrep.OfrepError as exc:
        return json_response(exc.body(), status=exc.status)
    except throttle.Throttled as exc:
        return error(exc.status, exc.field, exc.message, retry_after=exc.retry_after)
    if ofrep.etag_matches(request.META.get("HTTP_IF_NONE_MATCH", ""), etag):
        response = HttpResponse(status=304)
        response["Access-Control-Allow-Origin"] = "*"
    else:
        response = json_response(body)
    response["ETag"] = etag
    response["Access-Control-Expose-Headers"] = "ETag"  # a browser provider reads it for If-None-Match
    return response
