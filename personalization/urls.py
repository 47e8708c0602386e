from django.urls import path

from personalization.views import dashboard as views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("overview/live", views.overview_live, name="overview-live"),
    path("overview/chart", views.overview_chart, name="overview-chart"),
    path("settings/", views.settings_page, name="settings"),
    path("settings/keys", views.key_create, name="key-create"),
    path("settings/keys/<int:key_id>/revoke", views.key_revoke, name="key-revoke"),
    path("settings/members", views.member_set, name="member-set"),
    path("project/switch", views.project_switch, name="project-switch"),
]
