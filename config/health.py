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


def decide_readyz(request):
    """The decide process's readiness for a load balancer. decide answers without PostgreSQL or Redis
    (from its in-process snapshot, reason `fallback`), so taking replicas out of rotation when Redis is
    away would turn a degraded service into none: it is ready while it serves, and says what it sees."""
    try:
        redis_client.fast().ping()
        state = "ok"
    except redis.RedisError as exc:
        state = f"unreachable ({type(exc).__name__}): answering from the in-process snapshot"
    return JsonResponse({"ready": True, "checks": {"redis": state}})
