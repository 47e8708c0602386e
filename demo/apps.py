from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo shop (management commands demo_seed and demo_traffic, the page at /demo/shop/)."""

    name = "demo"
    default_auto_field = "django.db.models.BigAutoField"
