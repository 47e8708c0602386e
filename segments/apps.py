from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "segments"

    def ready(self) -> None:
        from personalization.signals import events_drained
        from segments.tasks import events_drained_receiver

        events_drained.connect(events_drained_receiver, dispatch_uid="segments-fold-in")
