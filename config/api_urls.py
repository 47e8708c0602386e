"""REST API routes (secret keys) of every app."""

from rest_framework.routers import DefaultRouter

from experiments import api as experiments_api
from personalization import api as personalization_api
from privacy import api as privacy_api

router = DefaultRouter(trailing_slash=True)
router.register("profiles", personalization_api.ProfileViewSet, basename="profile")
router.register("project", personalization_api.ProjectView, basename="project")

router.register("lift", experiments_api.LiftReportView, basename="lift")
router.register("privacy/requests", privacy_api.PrivacyRequestViewSet, basename="privacy-request")
router.register("privacy/consent", privacy_api.ConsentView, basename="privacy-consent")

urlpatterns = router.urls
