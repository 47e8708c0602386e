from django.urls import path

from experiments import views

urlpatterns = [
    path("lift/", views.lift_page, name="lift"),
    path("lift/compute", views.lift_compute, name="lift-compute"),
    path("lift/metrics/", views.lift_metrics, name="lift-metrics"),
    path("lift/metrics/new", views.lift_metric_create, name="lift-metric-create"),
    path("lift/metrics/choose", views.lift_metrics_choose, name="lift-metrics-choose"),
    path("lift/reports/<int:report_id>/progress", views.lift_progress, name="lift-progress"),
    path("lift/reports/<int:report_id>.csv", views.lift_csv, name="lift-csv"),
]
