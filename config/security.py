"""Browser hardening of the web process: Content-Security-Policy and no caching of pages about people.

Scripts come only from this site: htmx, plotly.js and static/js/dashboard.js are served from /static/,
and pages carry no inline script or event handler (charts are JSON data blocks that dashboard.js
draws). Styles allow 'unsafe-inline' because plotly.js positions and sizes chart parts with style
attributes and injects its own stylesheet at run time, and a few templates use style attributes; an
injected style cannot run code. plotly.js needs no 'unsafe-eval' for the chart types used here (bar,
scatter); only its WebGL traces compile code at run time.
"""

import json
import re

from django.conf import settings
from django.utils.cache import add_never_cache_headers

_STATIC_PREFIX = settings.STATIC_URL


def content_security_policy(*, connect_src: str = "'self'") -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            f"connect-src {connect_src}",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


_POLICY = content_security_policy()


class SecurityHeadersMiddleware:
    """Sets the CSP on every response that has none of its own, and `Cache-Control: no-store` on
    every page and API answer that does not set its own caching: dashboard pages, REST answers and the
    page that shows a new key hold personal data or secrets, so no browser or proxy may keep a copy.
    Static files keep their own long-lived caching."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", _POLICY)
        if not request.path.startswith(_STATIC_PREFIX) and "Cache-Control" not in response.headers:
            add_never_cache_headers(response)
        return response


# A JSON body that may hold what PostgreSQL cannot store: a NUL (raw or escaped) or a surrogate escape
# (\ud800-\udfff; a pair is a valid emoji, a lone one is not). Raw surrogates cannot occur in UTF-8.
_UNSTORABLE_JSON = re.compile(rb"\x00|\\u0000|\\u[dD][89a-fA-F]")


def _json_unstorable(body: bytes):
    """FieldError naming the path ("identifiers.user_id", "items[2]") of the first key or string of a
    JSON body that cannot be stored, or None. Iterative: a body nested a thousand deep costs no recursion."""
    from personalization.ingest.schema import FieldError, text_check

    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        if b"\x00" in body:
            return FieldError("body", "contains a NUL character, which cannot be stored; remove it")
        return None  # not JSON: the view's parser answers that
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        path, value = stack.pop()
        try:
            if isinstance(value, str):
                text_check(value, path or "body")
            elif isinstance(value, dict):
                for key in value:
                    text_check(key, f"{path or 'body'} (a key)")
                # Reversed onto the stack: the first bad field in the body's own order is named.
                stack.extend((f"{path}.{key}" if path else key, item) for key, item in reversed(value.items()))
            elif isinstance(value, list):
                stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        except FieldError as exc:
            return exc
    return None


class StorableInputMiddleware:
    """Dashboard forms and REST bodies: a NUL or lone surrogate anywhere in a query or form value, or
    in a key or string of a JSON body, is answered 400 naming the field, before any view writes it.
    One check here instead of one per form; the public endpoints check every field themselves
    (event_schema)."""

    _PUBLIC = ("/api/v1/events", "/api/v1/decide", "/ofrep/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.core.exceptions import RequestDataTooBig
        from django.http import JsonResponse

        from personalization.ingest.schema import FieldError, text_check

        if request.path.startswith(self._PUBLIC):
            return self.get_response(request)
        try:
            for name, values in [*request.GET.lists(), *(request.POST.lists() if request.method == "POST" else [])]:
                text_check(name, "a field name")
                for value in values:
                    text_check(value, name)
            if request.content_type.endswith("json") and _UNSTORABLE_JSON.search(request.body):
                error = _json_unstorable(request.body)
                if error is not None:
                    raise error
        except FieldError as exc:
            return JsonResponse({"error": {"field": exc.field, "message": f"{exc.field} {exc.message}"}}, status=400)
        except RequestDataTooBig:
            # Django's own answer is an HTML 400 that names nothing.
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            message = (
                f"body is larger than {limit:,} bytes; a variant payload may hold at most 64 KB of JSON and a"
                " form field far less: put large content behind a URL"
            )
            return JsonResponse({"error": {"field": "body", "message": message}}, status=413)
        return self.get_response(request)
