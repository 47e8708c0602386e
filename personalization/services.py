"""Every write of the personalization app. Import from here: `from personalization import services`."""

from personalization.decide.compile import experience_compile_problem, snapshot_compile, snapshot_publish
from personalization.decide.units import (
    profiles_publish,
    unit_assignments_publish,
    unit_intents_publish,
    unit_scores_publish,
    unit_segments_publish,
)
from personalization.experiences.bandits import bandit_counts, bandit_experiences_running, bandit_update
from personalization.experiences.metric_values import exposure_metric_values_fill
from personalization.experiences.segment_migration import (
    experience_migration_due,
    experience_segment_use,
    experience_segments_migrate,
)
from personalization.experiences.services import (
    ExperienceError,
    experience_complete,
    experience_create,
    experience_pause,
    experience_salt_set,
    experience_start,
    experience_started_at_set,
    experience_update,
    project_holdout_salt_set,
    project_holdout_set,
)
from personalization.ingest.bulk import HistoryEvent, HistoryExposure, HistoryLoaded, HistoryProfile, history_bulk_load
from personalization.ingest.dead_letters import dead_letters_delete, dead_letters_retry
from personalization.ingest.drain import events_drain, events_drain_backlog
from personalization.ingest.partitions import (
    RetentionDone,
    events_retention_apply,
    exposures_retention_apply,
    partitions_ensure,
)
from personalization.ingest.stream import events_ingest, stream_ensure_group
from personalization.people.subjects import (
    profiles_personalization_set,
    suppression_publish,
    unit_hashes_unprofile,
)
from personalization.workspace.audit import audit_record
from personalization.workspace.projects import (
    ProjectError,
    api_key_create,
    api_key_last_used_flush,
    api_key_revoke,
    api_keys_publish,
    membership_set,
    project_create,
    project_delete,
    project_live_update,
    project_rename,
)

__all__ = [
    "ExperienceError",
    "HistoryEvent",
    "HistoryExposure",
    "HistoryLoaded",
    "HistoryProfile",
    "ProjectError",
    "RetentionDone",
    "api_key_create",
    "api_key_last_used_flush",
    "api_key_revoke",
    "api_keys_publish",
    "audit_record",
    "bandit_counts",
    "bandit_experiences_running",
    "bandit_update",
    "dead_letters_delete",
    "dead_letters_retry",
    "events_drain",
    "events_drain_backlog",
    "events_ingest",
    "events_retention_apply",
    "experience_compile_problem",
    "experience_complete",
    "experience_create",
    "experience_migration_due",
    "experience_pause",
    "experience_salt_set",
    "experience_segment_use",
    "experience_segments_migrate",
    "experience_start",
    "experience_started_at_set",
    "experience_update",
    "exposure_metric_values_fill",
    "exposures_retention_apply",
    "history_bulk_load",
    "membership_set",
    "partitions_ensure",
    "profiles_personalization_set",
    "profiles_publish",
    "project_create",
    "project_delete",
    "project_holdout_salt_set",
    "project_holdout_set",
    "project_live_update",
    "project_rename",
    "snapshot_compile",
    "snapshot_publish",
    "stream_ensure_group",
    "suppression_publish",
    "unit_assignments_publish",
    "unit_hashes_unprofile",
    "unit_intents_publish",
    "unit_scores_publish",
    "unit_segments_publish",
]
