from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "privacy"

    def ready(self) -> None:
        # Imported here, not at the top: these modules load models, which Django allows only once apps are ready.
        from personalization import hooks
        from privacy import registry  # noqa: F401 -- registers privacy's own location (export files)
        from privacy.selectors import privacy_decide_settings, suppressed_among

        hooks.suppression.provide(suppressed_among)
        hooks.decide_privacy.provide(privacy_decide_settings)
