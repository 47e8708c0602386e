from django.apps import AppConfig


def _lift_headline(**kwargs):
    # Imported when the Overview first asks, not at start-up: the selectors load scipy.special (~0.3 s), which
    # decide and most workers never use.
    from experiments.selectors import lift_headline

    return lift_headline(**kwargs)


def _metric_definitions(*, project_id: int) -> list[dict]:
    # Imported when the drain first asks: metric_services loads the models, which an AppConfig module may
    # not import at its top (apps are not ready yet).
    from experiments.metric_services import metric_value_specs

    return metric_value_specs(project_id=project_id)


class ExperimentsConfig(AppConfig):
    name = "experiments"

    def ready(self) -> None:
        # Imported here, not at the top: app modules load models, which Django allows only once apps are ready.
        from personalization import hooks

        hooks.lift_headline.provide(_lift_headline)
        hooks.metric_definitions.provide(_metric_definitions)
