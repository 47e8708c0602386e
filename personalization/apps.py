from django.apps import AppConfig


class PersonalizationConfig(AppConfig):
    name = "personalization"
    verbose_name = "Personalization"

    def ready(self) -> None:
        from personalization import openapi  # noqa: F401 -- registers the secret-key scheme of the schema
