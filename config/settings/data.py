"""PostgreSQL and Redis. Unset URLs mean the embedded services started by `python -m config.embedded`."""

from urllib.parse import urlparse

from config import embedded
from config.env import ConfigError, env_bool, env_int, env_str

DATABASE_URL = env_str("DATABASE_URL", embedded.database_url())
REDIS_URL = env_str("REDIS_URL", embedded.redis_url(0))
# Redis Cluster for Kairos's own keys (decide, events, live state): KAIROS_REDIS_CLUSTER=1, or a
# REDIS_URL of the form redis+cluster://host:port naming any node (the client finds the others).
# Celery's broker and Django's cache stay on one plain Redis (kombu has no cluster transport):
# CELERY_BROKER_URL must then be set, and the cache uses it too unless KAIROS_CACHE_URL says otherwise.
KAIROS_REDIS_CLUSTER = env_bool("KAIROS_REDIS_CLUSTER", default=False) or REDIS_URL.startswith("redis+cluster://")
REDIS_URL = REDIS_URL.replace("redis+cluster://", "redis://", 1)
if KAIROS_REDIS_CLUSTER and not env_str("CELERY_BROKER_URL"):
    raise ConfigError(
        "KAIROS_REDIS_CLUSTER: set CELERY_BROKER_URL to a plain (non-cluster) Redis, e.g. redis://broker:6379/0; "
        "Celery cannot use Redis Cluster as its broker"
    )
CACHE_REDIS_URL = env_str("KAIROS_CACHE_URL", env_str("CELERY_BROKER_URL") if KAIROS_REDIS_CLUSTER else REDIS_URL)


def _database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ConfigError(f"DATABASE_URL must start with postgres://, got {parsed.scheme}://")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.path.lstrip("/") or "kairos",
        "USER": parsed.username or "postgres",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.hostname or "127.0.0.1",
        "PORT": str(parsed.port or 5432),
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
        # Parallel test runs on one machine can each take their own database.
        "TEST": {"NAME": env_str("KAIROS_TEST_DB", "test_kairos")},
    }


DATABASES = {"default": _database_from_url(DATABASE_URL)}

# Behind PgBouncer in transaction pooling (docker compose), consecutive transactions of one Django
# connection can run on different PostgreSQL sessions. Two things then break: server-side cursors
# (`.iterator()` declares a cursor in one transaction and fetches from it in the next) and psycopg 3's
# automatic prepared statements (prepared on one session after 5 runs, executed on another). The code
# uses nothing else that outlives a transaction: advisory locks are pg_advisory_xact_lock, settings are
# SET LOCAL, the drain's temp table is created and emptied inside its transaction (ON COMMIT DELETE ROWS).
KAIROS_PGBOUNCER = env_bool("KAIROS_PGBOUNCER", default=False)
if KAIROS_PGBOUNCER:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["default"]["OPTIONS"] = {"prepare_threshold": None}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_REDIS_URL,
        "KEY_PREFIX": "kr-cache",
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
