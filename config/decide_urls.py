"""The decide process: only the public endpoints, no sessions, no admin, no middleware."""

from django.urls import path

from config.health import decide_readyz
from config.public_urls import urlpatterns as public_urlpatterns

# /readyz for the load balancer's health checks (deploy/haproxy.cfg); web has its own, stricter one.
urlpatterns = [*public_urlpatterns, path("readyz", decide_readyz, name="readyz")]
