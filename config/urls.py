from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

# The secret-key scheme registers itself with drf-spectacular on import. Loaded with the dashboard's URLs, which
# every schema generation loads first, not at start-up: it pulls in DRF's fields, requests and pygments (~0.3 s),
# which decide and the workers never use.
import personalization.openapi  # noqa: F401
from config.health import readyz
from config.public_urls import urlpatterns as public_urlpatterns
from demo.views import demo_shop

urlpatterns = [
    *public_urlpatterns,
    path("readyz", readyz, name="readyz"),
    path("api/v1/", include("config.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("demo/shop/", demo_shop, name="demo-shop"),
    path("", include("segments.urls")),
    path("", include("privacy.urls")),
    path("", include("experiments.urls")),
    path("", include("personalization.urls")),
]


def not_found(request, exception):
    """API clients get JSON, as from every other API answer; people get the page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found: check the URL (see /api/docs/)."}, status=404)
    return defaults.page_not_found(request, exception)


handler404 = not_found
