from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.public_urls import urlpatterns as public_urlpatterns
from personalization.views.dashboard import section_placeholder
from personalization.views.demo_shop import demo_shop

urlpatterns = [
    *public_urlpatterns,
    path("api/v1/", include("config.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("demo/shop/", demo_shop, name="demo-shop"),
    path("", include("segments.urls")),
    path("privacy/", section_placeholder("privacy", "Privacy", "placeholder.html"), name="privacy"),
    path("", include("experiments.urls")),
    path("", include("personalization.urls")),
]
