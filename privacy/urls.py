from django.urls import path

from privacy import views

urlpatterns = [
    path("privacy/", views.queue, name="privacy"),
    path("privacy/requests/new", views.request_create, name="privacy-request-create"),
    path("privacy/requests/<int:request_id>/", views.request_detail, name="privacy-request"),
    path("privacy/requests/<int:request_id>/progress", views.request_progress, name="privacy-request-progress"),
    path("privacy/requests/<int:request_id>/export.zip", views.export_download, name="privacy-export"),
    path("privacy/requests/<int:request_id>/certificate.json", views.certificate_download, name="privacy-certificate"),
    path("privacy/requests/<int:request_id>/<slug:action>", views.request_action, name="privacy-request-action"),
    path("privacy/record", views.record, name="privacy-record"),
    path("privacy/settings", views.settings_save, name="privacy-settings"),
]
