from django.urls import path

from personalization.views import dashboard as views
from personalization.views import experience_migrate, experiences, live, projects

urlpatterns = [
    path("", views.overview, name="overview"),
    path("overview/live", views.overview_live, name="overview-live"),
    path("overview/chart", views.overview_chart, name="overview-chart"),
    path("overview/sessions", live.overview_sessions, name="overview-sessions"),
    path("visitors/", live.visitor_timeline, name="visitors"),
    path("settings/", views.settings_page, name="settings"),
    path("settings/keys", views.key_create, name="key-create"),
    path("settings/keys/<int:key_id>/revoke", views.key_revoke, name="key-revoke"),
    path("settings/members", views.member_set, name="member-set"),
    path("settings/dead-letters", views.dead_letters_panel, name="dead-letters"),
    path("settings/dead-letters/<slug:action>", views.dead_letters_act, name="dead-letters-act"),
    path("project/switch", views.project_switch, name="project-switch"),
    path("projects/new", projects.project_new, name="project-new"),
    path("settings/project/rename", projects.project_rename, name="project-rename"),
    path("settings/project/delete", projects.project_delete, name="project-delete"),
    path("settings/project/live", projects.project_live, name="project-live"),
    path("experiences/", experiences.experience_list, name="experiences"),
    path("experiences/new", experiences.experience_new, name="experience-new"),
    path("experiences/holdout", experiences.global_holdout_set, name="experience-holdout"),
    path("experiences/<slug:key>/", experiences.experience_detail, name="experience-detail"),
    path("experiences/<slug:key>/edit", experiences.experience_edit, name="experience-edit"),
    path("experiences/<slug:key>/live", experiences.experience_live, name="experience-live"),
    path("experiences/<slug:key>/preview", live.experience_preview, name="experience-preview"),
    path("experiences/<slug:key>/migrate", experience_migrate.experience_migrate, name="experience-migrate"),
    path("experiences/<slug:key>/<slug:action>", experiences.experience_transition, name="experience-transition"),
]
