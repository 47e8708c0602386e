"""Every write of the personalization app. Import from here: `from personalization import services`."""

from personalization.services.events import events_drain, events_ingest, stream_ensure_group
from personalization.services.projects import (
    api_key_create,
    api_key_last_used_flush,
    api_key_revoke,
    membership_set,
    project_create,
)

__all__ = [
    "api_key_create",
    "api_key_last_used_flush",
    "api_key_revoke",
    "events_drain",
    "events_ingest",
    "membership_set",
    "project_create",
    "stream_ensure_group",
]
