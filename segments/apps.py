from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "segments"

    def ready(self) -> None:
        from personalization.signals import events_drained, profiles_opted_out
        from segments.services.memberships import profiles_opted_out_receiver
        from segments.tasks import events_drained_receiver

        events_drained.connect(events_drained_receiver, dispatch_uid="segments-fold-in")
        profiles_opted_out.connect(profiles_opted_out_receiver, dispatch_uid="segments-opt-out")
