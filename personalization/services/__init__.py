"""Every write of the personalization app. Import from here: `from personalization import services`."""

from personalization.services.audit import audit_record
from personalization.services.bandits import bandit_counts, bandit_experiences_running, bandit_update
from personalization.services.dead_letters import dead_letters_delete, dead_letters_retry
from personalization.services.events import events_drain, events_ingest, stream_ensure_group
from personalization.services.experiences import (
    ExperienceError,
    experience_compile_problem,
    experience_complete,
    experience_create,
    experience_pause,
    experience_start,
    experience_update,
    profiles_publish,
    project_holdout_set,
    snapshot_compile,
    snapshot_publish,
)
from personalization.services.projects import (
    ProjectError,
    api_key_create,
    api_key_last_used_flush,
    api_key_revoke,
    api_keys_publish,
    membership_set,
    project_create,
    project_delete,
    project_rename,
)
from personalization.services.segment_migration import (
    experience_migration_due,
    experience_segment_use,
    experience_segments_migrate,
)
from personalization.services.units import unit_segments_publish

__all__ = [
    "ExperienceError",
    "ProjectError",
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
    "events_ingest",
    "experience_compile_problem",
    "experience_complete",
    "experience_create",
    "experience_migration_due",
    "experience_pause",
    "experience_segment_use",
    "experience_segments_migrate",
    "experience_start",
    "experience_update",
    "membership_set",
    "profiles_publish",
    "project_create",
    "project_delete",
    "project_holdout_set",
    "project_rename",
    "snapshot_compile",
    "snapshot_publish",
    "stream_ensure_group",
    "unit_segments_publish",
]
