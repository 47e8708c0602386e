"""/readyz: PostgreSQL, Redis and the worker's and beat's heartbeats, each named in the answer."""

import re
import time

import pytest

from config.beat import HeartbeatScheduler
from config.celery import app
from config.heartbeat import INTERVAL_SECONDS, heartbeat_write
from personalization import redis_client, rkeys

pytestmark = pytest.mark.django_db


def test_readyz__no_heartbeats__503_naming_the_worker_and_beat(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503 and body["ready"] is False
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
    assert body["checks"]["worker"] == "no heartbeat: start a worker (celery -A config worker)"
    assert body["checks"]["beat"] == "no heartbeat: start beat (celery -A config beat)"


def test_readyz__worker_and_beat_heartbeats__200(client):
    heartbeat_write(rkeys.WORKER_HEARTBEAT)
    heartbeat_write(rkeys.BEAT_HEARTBEAT)
    response = client.get("/readyz")
    assert response.status_code == 200
    checks = {"database": "ok", "redis": "ok", "worker": "ok", "beat": "ok"}
    assert response.json() == {"ready": True, "checks": checks}


def test_readyz__stale_worker_heartbeat__503_names_only_the_worker(client):
    redis_client.worker().set(rkeys.WORKER_HEARTBEAT, int(time.time()) - 3600)
    heartbeat_write(rkeys.BEAT_HEARTBEAT)
    body = client.get("/readyz").json()
    assert body["ready"] is False
    assert re.fullmatch(r"last heartbeat 360[01] s ago: is a worker running\?", body["checks"]["worker"])
    assert body["checks"]["beat"] == "ok"


def test_beat_scheduler__tick__writes_beats_heartbeat_and_never_sleeps_past_it(tmp_path):
    scheduler = HeartbeatScheduler(app=app, schedule_filename=str(tmp_path / "schedule"), lazy=True)
    scheduler.setup_schedule()
    scheduler.schedule.clear()  # nothing due: the tick would otherwise sleep up to beat's max interval
    assert scheduler.tick() <= INTERVAL_SECONDS
    assert abs(int(redis_client.worker().get(rkeys.BEAT_HEARTBEAT)) - time.time()) < 5
    assert INTERVAL_SECONDS * 3 <= rkeys.WORKER_HEARTBEAT_MAX_AGE_SECONDS


def test_readyz__redis_unreachable__503_naming_redis(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    redis_client.reset()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("unreachable")
