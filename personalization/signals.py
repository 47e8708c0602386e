"""Signals other apps may listen to, so personalization never needs to know who listens."""

from django.dispatch import Signal

# Sent after a drain step has committed and acknowledged its events: project_id, profile_ids (the
# profiles that got new events). Segments folds them into their behavior segments.
events_drained = Signal()
