"""Signals other apps may listen to, so personalization never needs to know who listens."""

from django.dispatch import Signal

# Sent after a drain step has committed and acknowledged its events: project_id, profile_ids (the
# profiles that got new events other than exposures). Segments folds them into their behavior segments.
events_drained = Signal()

# Sent after a transaction that switched personalization off for profiles (do-not-personalize set,
# consent to personalization withdrawn) has committed: project_id, profile_ids. Segments takes them
# out of every segment, map and lookalike, and out of decide's segment field.
profiles_opted_out = Signal()
