"""Health checks. /healthz: the process answers (liveness). /readyz: it can do its work — PostgreSQL
and Redis answer, and the worker and beat each wrote their heartbeat within the last minute.
docker-compose's health checks call /readyz; each check is reported by name, without personal data."""

import time

import redis
from django.db import DatabaseError, connection
from django.http import JsonResponse

from personalization import redis_client, rkeys


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _heartbeat(beats: dict, key: str, name: str, command: str) -> str:
    beat = beats[key]
    if beat is None:
        return f"no heartbeat: start {name} ({command})"
    age = time.time() - int(beat)
    if age > rkeys.WORKER_HEARTBEAT_MAX_AGE_SECONDS:
        return f"last heartbeat {age:.0f} s ago: is {name} running?"
    return "ok"


def _redis_worker_beat() -> tuple[str, str, str]:
    keys = (rkeys.WORKER_HEARTBEAT, rkeys.BEAT_HEARTBEAT)
    try:
        beats = dict(zip(keys, redis_client.fast().mget(keys), strict=True))
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})", "unknown: Redis is unreachable", "unknown: Redis is unreachable"
    worker = _heartbeat(beats, rkeys.WORKER_HEARTBEAT, "a worker", "celery -A config worker")
    beat = _heartbeat(beats, rkeys.BEAT_HEARTBEAT, "beat", "celery -A config beat")
    return "ok", worker, beat


def readyz(request):
    checks = {"database": _database()}
    checks["redis"], checks["worker"], checks["beat"] = _redis_worker_beat()
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
