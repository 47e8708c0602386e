"""/readyz: PostgreSQL, Redis and the worker heartbeat, each named in the answer."""

import time

import pytest

from personalization import redis_client, rkeys
from personalization.tasks import worker_heartbeat_task

pytestmark = pytest.mark.django_db


def test_readyz__no_worker_heartbeat__503_naming_the_worker(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503 and body["ready"] is False
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
    assert "no heartbeat" in body["checks"]["worker"]


def test_readyz__heartbeat_task_ran__200(client):
    worker_heartbeat_task()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "redis": "ok", "worker": "ok"}}


def test_readyz__stale_heartbeat__503(client):
    redis_client.worker().set(rkeys.WORKER_HEARTBEAT, int(time.time()) - 3600)
    body = client.get("/readyz").json()
    assert body["ready"] is False and "s ago" in body["checks"]["worker"]


def test_readyz__redis_unreachable__503_naming_redis(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    redis_client.reset()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("unreachable")


def test_beat__sends_the_heartbeat_often_enough(settings):
    from personalization.tasks import HEARTBEAT_MAX_AGE_SECONDS

    entry = settings.CELERY_BEAT_SCHEDULE["worker-heartbeat"]
    assert entry["task"] == "personalization.tasks.worker_heartbeat_task"
    assert entry["schedule"] * 3 <= HEARTBEAT_MAX_AGE_SECONDS
