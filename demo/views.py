"""The demo shop at /demo/shop/: static/demo/shop.html, a storefront that uses the site snippet.

It stands for a customer's own site, so it needs no login and reads nothing from the database. The
page takes its public key from `?key=`; when none is given and the demo has been seeded, this view
hands it the demo project's public key (never the secret one), so the page works as it is.
"""

import json

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse

from config import security
from demo.seed import demo_keys_path

PAGE = settings.BASE_DIR / "static" / "demo" / "shop.html"


def _demo_public_key() -> str:
    try:
        key = json.loads(demo_keys_path().read_text()).get("public_key")
    except (OSError, ValueError, AttributeError):
        return ""
    return key if isinstance(key, str) else ""


def demo_shop(request: HttpRequest) -> HttpResponse:
    try:
        html = PAGE.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Http404("the demo shop page (static/demo/shop.html) is missing") from None
    key = _demo_public_key()
    if key:
        preset = json.dumps({"key": key}).replace("<", "\\u003c")
        block = f'<script type="application/json" id="kairos-demo">{preset}</script>'
        html = html.replace("</head>", f"{block}\n</head>", 1)
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    # A customer's page may call a decide server on another origin (?endpoint=…); scripts stay local.
    response["Content-Security-Policy"] = security.content_security_policy(connect_src="*")
    return response
