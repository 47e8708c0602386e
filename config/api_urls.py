"""REST API routes (secret keys) of every app."""

from django.urls import path
from rest_framework.routers import APIRootView, DefaultRouter

from experiments import api as experiments_api
from personalization import api as personalization_api
from personalization.history_api import events_import_view
from privacy import api as privacy_api
from segments import api as segments_api


class ApiRootView(APIRootView):
    """The list of REST endpoints: open to anyone who may read the project."""

    required_action = "project"


router = DefaultRouter(trailing_slash=True)
router.APIRootView = ApiRootView
router.register("profiles", personalization_api.ProfileViewSet, basename="profile")
router.register("project", personalization_api.ProjectView, basename="project")
# "api-": the dashboard already names its page "experience-detail".
router.register("experiences", personalization_api.ExperienceViewSet, basename="api-experience")
router.register("projects", personalization_api.ProjectsViewSet, basename="projects")

router.register("segments", segments_api.SegmentViewSet, basename="segment")
router.register("intents", segments_api.IntentViewSet, basename="intent")
router.register("lift", experiments_api.LiftReportView, basename="lift")
router.register("metrics", experiments_api.MetricView, basename="metric")
router.register("privacy/requests", privacy_api.PrivacyRequestViewSet, basename="privacy-request")
router.register("privacy/consent", privacy_api.ConsentView, basename="privacy-consent")

urlpatterns = [path("events/import", events_import_view, name="api-events-import"), *router.urls]
