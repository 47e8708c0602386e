"""Public keys are published to Redis and checked there, so decide and events need Redis alone;
PostgreSQL answers only for a hash Redis does not have. Secret keys never go to Redis."""

import time

import orjson
import pytest
from django.db import OperationalError, connection

from personalization import redis_client, rkeys, services
from personalization.models import ApiKey
from personalization.workspace import auth
from tests.factories import event_make, events_post


def published() -> dict[bytes, bytes]:
    return redis_client.worker().hgetall(rkeys.PUBLIC_KEYS)


def make_key(project, kind: str, capture) -> tuple[ApiKey, str]:
    with capture(execute=True):
        return services.api_key_create(project=project, kind=kind, name=kind)


@pytest.mark.django_db(transaction=True)
def test_key_create_and_revoke__public_hash_published_secret_never(project):
    key, raw = services.api_key_create(project=project, kind="public", name="site")
    _, secret_raw = services.api_key_create(project=project, kind="secret", name="server")
    assert published() == {auth.key_hash(raw).encode(): f"{project.pk}:{key.pk}".encode()}
    assert auth.key_hash(secret_raw).encode() not in published() and raw not in str(published())

    services.api_key_revoke(key=key)
    assert published() == {auth.key_hash(raw).encode(): b"-"}
    auth.cache_clear()
    assert auth.public_key_lookup(raw) is None


@pytest.mark.django_db
def test_public_key_lookup__cold_cache__answered_by_redis_without_a_query(
    project, django_capture_on_commit_callbacks, django_assert_num_queries
):
    key, raw = make_key(project, "public", django_capture_on_commit_callbacks)
    with django_assert_num_queries(0):
        info = auth.public_key_lookup(raw)
    assert info == auth.KeyInfo(key.pk, project.pk, "public")


@pytest.mark.django_db
def test_public_endpoints__postgres_unreachable_cold_cache__key_still_served(
    client, project, django_capture_on_commit_callbacks, monkeypatch
):
    _, raw = make_key(project, "public", django_capture_on_commit_callbacks)

    asked: list[str] = []

    def refuse(execute, sql, params, many, context):
        asked.append(sql)
        raise OperationalError("connection refused")  # what psycopg says with PostgreSQL away

    # Every SQL statement of this process fails, as with PostgreSQL away (the real server case is
    # tests/test_runner.py, which kills PostgreSQL under `python -m config.runner`).
    with connection.execute_wrapper(refuse):
        response = events_post(client, raw, [event_make(1)])
        decided = client.post(
            "/api/v1/decide",
            orjson.dumps({"anonymous_id": "u1"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert decided.status_code == 200
    assert not [sql for sql in asked if "apikey" in sql], "no key was looked up in PostgreSQL"


@pytest.mark.django_db
def test_public_key_lookup__redis_lacks_the_hash__postgres_answers_and_publish_heals(
    project, django_capture_on_commit_callbacks, django_assert_num_queries
):
    key, raw = make_key(project, "public", django_capture_on_commit_callbacks)
    redis_client.worker().delete(rkeys.PUBLIC_KEYS)  # a Redis that restarted without its data
    with django_assert_num_queries(1):
        assert auth.public_key_lookup(raw) == auth.KeyInfo(key.pk, project.pk, "public")
    assert services.api_keys_publish() == 1
    auth.cache_clear()
    with django_assert_num_queries(0):
        assert auth.public_key_lookup(raw).key_id == key.pk


@pytest.mark.django_db
def test_api_keys_publish__revoked_written_deleted_forgotten_never_undoes_a_revocation(
    project, other_project, django_capture_on_commit_callbacks
):
    kept, kept_raw = make_key(project, "public", django_capture_on_commit_callbacks)
    revoked, revoked_raw = make_key(project, "public", django_capture_on_commit_callbacks)
    _, gone_raw = make_key(other_project, "public", django_capture_on_commit_callbacks)
    client = redis_client.worker()
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at="2026-01-01T00:00Z")  # Redis missed the revoke
    ApiKey.objects.filter(project=other_project).delete()  # ... and the delete
    client.hset(rkeys.PUBLIC_KEYS, "f" * 64, "-")  # a stale hash of a key long gone
    assert services.api_keys_publish() == 2
    assert published() == {
        auth.key_hash(kept_raw).encode(): f"{project.pk}:{kept.pk}".encode(),
        auth.key_hash(revoked_raw).encode(): b"-",
    }
    # A revocation Redis has (committed after a publish read its rows) stays: active keys are only
    # written where Redis has nothing.
    client.hset(rkeys.PUBLIC_KEYS, auth.key_hash(kept_raw), "-")
    ApiKey.objects.filter(pk=kept.pk).update(revoked_at=None)
    services.api_keys_publish()
    assert published()[auth.key_hash(kept_raw).encode()] == b"-"
    assert gone_raw  # (its hash is checked absent above)


@pytest.mark.django_db(transaction=True)
def test_key_revoked__refused_by_a_warm_process_within_the_cache_time(client, project, monkeypatch):
    monkeypatch.setattr(auth, "KEY_CACHE_SECONDS", 0.5)  # the 10 s of production, shortened
    key, raw = services.api_key_create(project=project, kind="public", name="site")
    assert events_post(client, raw, [event_make(1)]).status_code == 200  # cached in this process
    services.api_key_revoke(key=key)
    deadline = time.monotonic() + 5
    while events_post(client, raw, [event_make(2)]).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key was still accepted"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_project_delete__its_public_keys_leave_redis(project, other_project):
    _, raw = services.api_key_create(project=project, kind="public", name="site")
    _, other_raw = services.api_key_create(project=other_project, kind="public", name="site")
    services.project_delete(project=project, confirm=project.slug)
    assert list(published()) == [auth.key_hash(other_raw).encode()]
    auth.cache_clear()
    assert auth.public_key_lookup(raw) is None
