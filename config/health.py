"""Health checks. /healthz: the process answers (liveness). /readyz: it can do its work — PostgreSQL
and Redis answer, and a worker ran the heartbeat task beat sends every 5 s within the last minute.
docker-compose's health checks call /readyz; each check is reported by name, without personal data."""

import time

import redis
from django.db import DatabaseError, connection
from django.http import JsonResponse

from personalization import redis_client, rkeys
from personalization.tasks import HEARTBEAT_MAX_AGE_SECONDS


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _redis_and_worker() -> tuple[str, str]:
    try:
        beat = redis_client.fast().get(rkeys.WORKER_HEARTBEAT)
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})", "unknown: Redis is unreachable"
    if beat is None:
        return "ok", "no heartbeat: start a worker and beat (celery -A config worker / beat)"
    age = time.time() - int(beat)
    if age > HEARTBEAT_MAX_AGE_SECONDS:
        return "ok", f"last heartbeat {age:.0f} s ago: are the worker and beat running?"
    return "ok", "ok"


def readyz(request):
    checks = {"database": _database()}
    checks["redis"], checks["worker"] = _redis_and_worker()
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"ready": ready, "checks": checks}, status=200 if ready else 503)
