from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "segments"

    def ready(self) -> None:
        # Imported here, not at the top: these modules load models, which Django allows only once apps are ready.
        from personalization import hooks
        from personalization.signals import events_drained, profiles_opted_out
        from segments import personal_data, selectors, why  # noqa: F401 -- personal_data registers segments' locations
        from segments.services.intents import intents_opted_out_receiver
        from segments.services.memberships import profiles_opted_out_receiver
        from segments.services.scores import scores_opted_out_receiver
        from segments.tasks import events_drained_receiver, intents_drained_receiver

        events_drained.connect(events_drained_receiver, dispatch_uid="segments-fold-in")
        profiles_opted_out.connect(profiles_opted_out_receiver, dispatch_uid="segments-opt-out")
        profiles_opted_out.connect(scores_opted_out_receiver, dispatch_uid="segments-scores-opt-out")
        events_drained.connect(intents_drained_receiver, dispatch_uid="segments-intents")
        profiles_opted_out.connect(intents_opted_out_receiver, dispatch_uid="segments-intents-opt-out")
        hooks.segment_catalog.provide(selectors)
        hooks.person_why.provide(why.unit_explanations)
