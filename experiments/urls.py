from django.urls import path

from experiments import views

urlpatterns = [
    path("lift/", views.lift_page, name="lift"),
    path("lift/compute", views.lift_compute, name="lift-compute"),
    path("lift/reports/<int:report_id>/progress", views.lift_progress, name="lift-progress"),
    path("lift/reports/<int:report_id>.csv", views.lift_csv, name="lift-csv"),
]
