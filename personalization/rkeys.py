"""Every Redis key Kairos writes, in one place.

Keys holding data about a person are marked PERSONAL (in the docstring of their builder, or in the
comment of a constant); the privacy registry walks them on export and erasure, and
tests/privacy/test_registry.py fails while a PERSONAL key has no location there.

Every name carries a Redis Cluster hash tag (the part in braces decides the slot), so the keys one
command, pipeline-transaction or Lua script touches together sit in one slot
(tests/test_redis_cluster.py checks every builder here and in throttle.py):
- `{<project id>}`: everything of one project, its visitors' unit hashes included. Decide's one
  round trip (the unit hash, the snapshot version, the suppression set, the per-IP counter) and the
  live-state script (unit hashes, suppression set, active index) touch a project's keys together,
  so a project is one slot: a cluster spreads projects over its nodes, not one project's visitors.
- `{events}`: the stream of accepted events and its per-project counts, with the events
  endpoint's rate counters (one ingest script counts, checks the cap and appends).
- `{keys}`: API key lookups; `{worker}`: the worker's and beat's heartbeats; `{rl}`: decide's per-key rate counters.
Names before the tags (`kr:<project>:...`, `kr:events`) are renamed once at start-up
(personalization/redis_migrate.py, `manage.py redis_keys_migrate`).
"""

EVENTS_STREAM = "kr:{events}"  # PERSONAL. accepted event batches waiting for the drain
EVENTS_GROUP = "drain"
EVENTS_QUEUED = "kr:{events}:queued"  # project id -> events waiting in the stream (the per-project cap)
# sha256 of each public key -> "project:key", or "-" once revoked; decide and events check keys here.
# Hashes of random keys, no personal data; secret keys are never written here.
PUBLIC_KEYS = "kr:{keys}:public"
KEY_LAST_USED = "kr:{keys}:last_used"  # api key id -> unix time of last use
# Unix times the worker's main process and beat last wrote their heartbeat (every 5 s, config/heartbeat.py).
# Older than this, /readyz calls them gone and the runner of `make run` restarts the one that stays so
# (config/runner.py).
WORKER_HEARTBEAT = "kr:{worker}:heartbeat"
BEAT_HEARTBEAT = "kr:{worker}:beat"
WORKER_HEARTBEAT_MAX_AGE_SECONDS = 60


# The unit hash's fields of the live session state (people/live_session.py): "ls" its numbers, the
# others its short lists and texts. Named here because the writers of the opt-out flags clear them
# too (decide/units.py, people/subjects.py).
UNIT_LIVE_FIELDS = ("ls", "lt", "li", "lc", "lq", "la", "lh", "lf", "ld")
# Every write to a unit hash renews this TTL (decide's sticky writes, the publishers, the live state).
UNIT_TTL_SECONDS = 180 * 24 * 3600


def unit(project_id: int, unit_id: str) -> str:
    """PERSONAL. Hash of one decide unit: flags, segment ids, sticky assignments, live session state."""
    return f"kr:{{{project_id}}}:u:{unit_id}"


def project_keys(project_id: int) -> str:
    """The SCAN pattern of every key of a project (deleting the project)."""
    return f"kr:{{{project_id}}}:*"


def live_active(project_id: int) -> str:
    """PERSONAL. Sorted set of the project's unit ids scored by the unix second of their last event,
    trimmed to the last hour by every live update: what the live preview and the Sessions panel walk
    instead of scanning every unit hash."""
    return f"kr:{{{project_id}}}:live:active"


def snapshot(project_id: int) -> str:
    """The compiled decide snapshot (JSON) of a project's running experiences."""
    return f"kr:{{{project_id}}}:snapshot"


def snapshot_version(project_id: int) -> str:
    """The version of the published snapshot; decide processes poll it about once a second."""
    return f"kr:{{{project_id}}}:snapshot:v"


def snapshot_counter(project_id: int) -> str:
    """The counter that numbers a project's snapshot versions."""
    return f"kr:{{{project_id}}}:snapshot:n"


def metric(project_id: int, name: str, minute: int) -> str:
    """Per-minute counters for the live dashboard (no personal data)."""
    return f"kr:{{{project_id}}}:m:{name}:{minute}"


def suppressed(project_id: int) -> str:
    """Set of erased subjects' keyed digests (no identifier), checked by decide."""
    return f"kr:{{{project_id}}}:suppressed"


def stored(project_id: int) -> str:
    """What the drain last stored for a project, as change counters (no personal data): field `n` the
    counter, `epoch` when it started, `all`, `x:<experience key>` (exposures), `e:<event type>`."""
    return f"kr:{{{project_id}}}:stored"


def project_tag(project_id: int) -> str:
    """The hash tag of a project's keys: on Redis Cluster every key with it lives in one slot."""
    return f"{{{project_id}}}"
