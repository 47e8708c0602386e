from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"

    def ready(self) -> None:
        # Imported here, not at the top: app modules load models, which Django allows only once apps are ready.
        from experiments.selectors import lift_headline
        from personalization import hooks

        hooks.lift_headline.provide(lift_headline)
