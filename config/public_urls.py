"""The public-key endpoints, served by both the web and the decide processes."""

from django.http import JsonResponse
from django.urls import path

from personalization import public_api


def healthz(request):
    return JsonResponse({"ok": True})


urlpatterns = [
    path("api/v1/events", public_api.events, name="api-events"),
    path("api/v1/decide", public_api.decide, name="api-decide"),
    path("api/v1/ping", public_api.ping, name="api-ping"),
    path("healthz", healthz, name="healthz"),
]
