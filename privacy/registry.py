"""The registry of personal data locations: every table and Redis key holding data about a person.

Export and erasure (a later feature) walk this list and nothing else, so a new table or key about
a person must be added here; tests/privacy/test_registry.py fails when a model pointing at a
profile is missing.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class TableLocation:
    """Rows of `model` (app_label.Model) that belong to a person, found through `profile_field`, or
    (when the rows have no profile, like dead letters) by the person's ids in `id_fields`."""

    model: str
    profile_field: str
    description: str
    id_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class RedisLocation:
    """A Redis key per identity of a person; `pattern` is formatted with project_id and unit_id."""

    pattern: str
    description: str


TABLES = (
    TableLocation("personalization.Profile", "pk", "the profile: ids, attributes, consent, activity"),
    TableLocation("personalization.ProfileIdentity", "profile", "user and anonymous ids"),
    TableLocation("personalization.Event", "profile", "behavior events"),
    TableLocation("personalization.Exposure", "profile", "experiences shown and their outcomes"),
    TableLocation("segments.ProfileEmbedding", "profile", "behavior vector derived from the person's events"),
    TableLocation("segments.SegmentMembership", "profile", "behavior, lookalike and rule segments the person is in"),
    TableLocation(
        "personalization.DeadLetter",
        "",
        "events the drain could not store: ids, properties and the error",
        id_fields=("user_id", "anonymous_id"),
    ),
)

REDIS_KEYS = (RedisLocation("kr:{project_id}:u:{unit_id}", "decide hash: attributes, flags, sticky assignments"),)


def personal_data_locations() -> tuple[tuple[TableLocation, ...], tuple[RedisLocation, ...]]:
    return TABLES, REDIS_KEYS
