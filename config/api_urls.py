"""REST API routes (secret keys) of every app."""

from rest_framework.routers import APIRootView, DefaultRouter

from experiments import api as experiments_api
from personalization import api as personalization_api


class ApiRootView(APIRootView):
    """The list of REST endpoints: open to anyone who may read the project."""

    required_action = "project"


router = DefaultRouter(trailing_slash=True)
router.APIRootView = ApiRootView
router.register("profiles", personalization_api.ProfileViewSet, basename="profile")
router.register("project", personalization_api.ProjectView, basename="project")

router.register("lift", experiments_api.LiftReportView, basename="lift")

urlpatterns = router.urls
