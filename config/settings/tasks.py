"""Celery: broker and result backend are the same Redis; schedules for the learning loop."""

from celery.schedules import crontab

from config.env import env_int, env_str
from config.settings.data import REDIS_URL

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL)
# A task is acknowledged when it finishes, not when it starts: a worker killed mid-task (SIGKILL, OOM,
# a lost machine) leaves its message to be delivered again, and every task is idempotent. A pool
# process that dies mid-task puts its message straight back (reject_on_worker_lost); a whole worker
# that dies leaves it unacknowledged in Redis, which hands it to another worker after the visibility
# timeout. That timeout must exceed the longest task (a lift report on a large project takes minutes;
# bench/lift.py), or a slow task would run twice at once: harmless, as they are idempotent, but wasted.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# kombu looks for such messages every 10 s but, by default, scans only on every 10th look (so up to
# ~100 s late); a scan is one ZRANGE, so every look scans.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("KAIROS_CELERY_VISIBILITY_TIMEOUT", 900),
    "unacked_restore_throttle": 1,
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 3600
# No caller reads a task's result (tasks write what they produce to PostgreSQL and Redis), so none is
# stored. Besides saving writes, this keeps the worker's main process off the result backend: with
# results on, each task beat sent with `expires` that waited out a Redis restart is marked revoked
# there, and every such write retries (20 times, 1 s apart) inside the worker's event loop, which
# then stopped taking tasks for minutes after a Redis restart under `make run`.
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat and the worker write their own heartbeats (config/heartbeat.py), so a worker whose every slot is
# busy no longer looks dead; a task stuck for good (a lock never released, a hung socket) is ended
# instead by this limit, and fails. An hour is far above the longest job measured (bench/lift.py).
CELERY_TASK_TIME_LIMIT = env_int("KAIROS_TASK_TIME_LIMIT_SECONDS", 3600)
CELERY_BEAT_SCHEDULER = "config.beat:HeartbeatScheduler"

# Drain: how many stream entries (each one accepted batch of events) one step moves, and how
# long an entry may sit unacknowledged with a dead consumer before another one claims it.
KAIROS_DRAIN_ENTRIES = env_int("KAIROS_DRAIN_ENTRIES", 50)
KAIROS_DRAIN_CLAIM_IDLE_MS = env_int("KAIROS_DRAIN_CLAIM_IDLE_MS", 30_000)

CELERY_BEAT_SCHEDULE = {
    "events-drain": {
        "task": "personalization.tasks.events_drain_task",
        "schedule": 1.0,
        # A drain already running covers the stream; a tick that waited longer than this is moot.
        "options": {"expires": 5},
    },
    "bandits-update": {
        "task": "personalization.tasks.bandits_update_task",
        "schedule": float(env_int("KAIROS_BANDIT_EVERY_SECONDS", 5)),
        "options": {"expires": 10},
    },
    "lift-reports-precompute": {
        "task": "experiments.tasks.lift_reports_precompute_task",
        "schedule": float(env_int("KAIROS_LIFT_EVERY_SECONDS", 900)),
        "options": {"expires": 600},
    },
    "snapshots-publish": {
        "task": "personalization.tasks.snapshots_publish_task",
        "schedule": 60.0,
        "options": {"expires": 60},
    },
    "embeddings-refit-nightly": {
        "task": "segments.tasks.embeddings_refit_nightly_task",
        "schedule": crontab(hour=3, minute=0),
        "options": {"expires": 3600},
    },
    # Predictive scores retrained nightly, after the embedder refit, with each project's latest settings.
    "score-runs-nightly": {
        "task": "segments.tasks.score_runs_scheduled_task",
        "schedule": crontab(hour=4, minute=0),
        "options": {"expires": 3600},
    },
    # Intent scores fade with the age of the words that made them: everyone is scored again nightly, so
    # someone who stopped searching does not keep last month's score until their next event.
    "intents-rescore-nightly": {
        "task": "segments.tasks.intents_rescore_nightly_task",
        "schedule": crontab(hour=4, minute=30),
        "options": {"expires": 3600},
    },
    "clustering-runs-resume": {
        "task": "segments.tasks.clustering_runs_resume_task",
        "schedule": 30.0,
        "options": {"expires": 30},
    },
    # A segment publish to decide cut short by a dead worker is finished within a minute or so.
    "memberships-publish-resume": {
        "task": "segments.tasks.memberships_publish_resume_task",
        "schedule": 30.0,
        "options": {"expires": 30},
    },
    "rule-segments-refresh": {
        "task": "segments.tasks.rule_segments_refresh_task",
        "schedule": 600.0,
        "options": {"expires": 600},
    },
    # decide and events check public keys in Redis; this heals a Redis that lost some of them.
    "api-keys-publish": {
        "task": "personalization.tasks.api_keys_publish_task",
        "schedule": 10.0,
        "options": {"expires": 10},
    },
    "api-keys-last-used": {
        "task": "personalization.tasks.api_key_last_used_flush_task",
        "schedule": 30.0,
        "options": {"expires": 30},
    },
    # Events and exposures are partitioned by month: the coming months exist before their rows arrive.
    "partitions-ensure-daily": {
        "task": "personalization.tasks.partitions_ensure_task",
        "schedule": crontab(hour=2, minute=30),
        "options": {"expires": 3600},
    },
    "privacy-housekeeping": {
        "task": "privacy.tasks.privacy_housekeeping_task",
        "schedule": float(env_int("KAIROS_PRIVACY_HOUSEKEEPING_SECONDS", 3600)),
        "options": {"expires": 3600},
    },
}
