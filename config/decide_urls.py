"""The decide process: only the public endpoints, no sessions, no admin, no middleware."""

from config.public_urls import urlpatterns

__all__ = ["urlpatterns"]
