"""REST API routes (secret keys) of every app."""

from rest_framework.routers import DefaultRouter

from experiments import api as experiments_api
from personalization import api as personalization_api

router = DefaultRouter(trailing_slash=True)
router.register("profiles", personalization_api.ProfileViewSet, basename="profile")
router.register("project", personalization_api.ProjectView, basename="project")

router.register("lift", experiments_api.LiftReportView, basename="lift")

urlpatterns = router.urls
