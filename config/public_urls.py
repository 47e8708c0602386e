"""The public-key endpoints, served by both the web and the decide processes."""

from django.http import JsonResponse
from django.urls import path

from personalization import ofrep_api, public_api, sdk_api


def healthz(request):
    return JsonResponse({"ok": True})


urlpatterns = [
    path("api/v1/events", public_api.events, name="api-events"),
    path("api/v1/decide", public_api.decide, name="api-decide"),
    path("api/v1/decide/batch", public_api.decide_batch, name="api-decide-batch"),
    path("api/v1/decide/export", public_api.decide_export, name="api-decide-export"),
    path("ofrep/v1/evaluate/flags", ofrep_api.evaluate_flags, name="ofrep-evaluate-flags"),
    path("ofrep/v1/evaluate/flags/<str:key>", ofrep_api.evaluate_flag, name="ofrep-evaluate-flag"),
    path("api/v1/sdk/snapshot", sdk_api.snapshot, name="api-sdk-snapshot"),
    path("api/v1/sdk/snapshot/events", sdk_api.snapshot_events, name="api-sdk-snapshot-events"),
    path("api/v1/ping", public_api.ping, name="api-ping"),
    path("healthz", healthz, name="healthz"),
]
