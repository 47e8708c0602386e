from django.urls import path

from segments import views

urlpatterns = [
    path("segments/", views.explorer, name="segments"),
    path("segments/runs/start", views.run_start, name="segments-run-start"),
    path("segments/runs/<int:run_id>/progress", views.run_progress, name="segments-run-progress"),
    path("segments/lookalikes/new", views.lookalike_builder, name="segments-lookalike"),
    path("segments/lookalikes/builds/<int:build_id>/", views.lookalike_build_page, name="segments-lookalike-build"),
    path("segments/rules/new", views.rule_editor, name="segments-rule"),
    path("segments/intents/", views.intents_page, name="segments-intents"),
    path("segments/intents/<str:key>/delete", views.intent_delete, name="segments-intent-delete"),
    path("segments/scores/", views.scores, name="segments-scores"),
    path("segments/scores/start", views.score_run_start, name="segments-score-start"),
    path("segments/scores/<int:run_id>/progress", views.score_run_progress, name="segments-score-progress"),
    path("segments/s/<str:key>/", views.segment_detail, name="segments-detail"),
    path("segments/s/<str:key>/rename", views.segment_rename, name="segments-rename"),
]
