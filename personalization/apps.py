from django.apps import AppConfig


class PersonalizationConfig(AppConfig):
    name = "personalization"
    verbose_name = "Personalization"

    def ready(self) -> None:
        # Imported here, not at the top: these modules load models, which Django allows only once apps are ready.
        from personalization import hooks  # noqa: F401 -- the hooks' startup check
        from personalization.people import personal_locations  # noqa: F401 -- registers personalization's locations
