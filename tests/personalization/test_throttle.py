"""Issue 9: limits per key and per IP on decide and events (429 + Retry-After + JSON), a cap on the
events one project may have waiting in the stream (503 + Retry-After), and what decide pays for it:
one command more, inside its one round trip."""

import orjson
import pytest

from personalization import redis_client, rkeys, services, throttle
from personalization.decide import runtime as decide_runtime
from tests.factories import event_make, events_post, key_make


def decide_post(client, key: str, ip: str = "127.0.0.1", unit: str = "a"):
    return client.post(
        "/api/v1/decide",
        data=orjson.dumps({"anonymous_id": unit}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        REMOTE_ADDR=ip,
    )


def assert_throttled(response, status: int, field: str) -> None:
    assert response.status_code == status, response.content
    assert response["Retry-After"].isdigit() and int(response["Retry-After"]) >= 1
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["message"]


@pytest.mark.django_db
def test_decide__over_the_per_key_limit__429_with_retry_after(client, project, public_key, settings):
    settings.KAIROS_DECIDE_PER_KEY_PER_SECOND = 5
    # 12 requests: whatever second boundary they straddle, one window holds more than 5.
    statuses = [decide_post(client, public_key, unit=f"u{i}") for i in range(12)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and all(r.status_code in (200, 429) for r in statuses)
    assert_throttled(limited[0], 429, "Authorization")
    other = key_make(project=project)
    assert decide_post(client, other).status_code == 200, "another key has its own count"


@pytest.mark.django_db
def test_decide__over_the_per_ip_limit__429_and_other_addresses_unaffected(client, project, public_key, settings):
    settings.KAIROS_DECIDE_PER_IP_PER_SECOND = 5
    # The check uses the refused answer itself: a request sent after the loop may fall into the next
    # one-second window on a loaded machine.
    answers = [decide_post(client, public_key, ip="203.0.113.7", unit=f"u{i}") for i in range(12)]
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused, [answer.status_code for answer in answers]
    assert_throttled(refused[0], 429, "client")
    assert decide_post(client, public_key, ip="203.0.113.8").status_code == 200


@pytest.mark.django_db
def test_decide__forwarded_for__counted_per_client_behind_a_trusted_proxy(client, project, public_key, settings):
    settings.KAIROS_DECIDE_PER_IP_PER_SECOND = 3
    settings.KAIROS_TRUSTED_PROXIES = 1

    def via_proxy(client_ip: str):
        return client.post(
            "/api/v1/decide",
            data=b'{"anonymous_id": "a"}',
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {public_key}",
            HTTP_X_FORWARDED_FOR=f"10.9.9.9, {client_ip}",  # the first hop is whatever the client claimed
            REMOTE_ADDR="10.0.0.1",
        )

    assert 429 in [via_proxy("198.51.100.1").status_code for _ in range(8)]
    assert via_proxy("198.51.100.2").status_code == 200


@pytest.mark.django_db
def test_decide__limits_cost_one_command_in_the_same_round_trip(client, project, public_key, monkeypatch):
    from tests.personalization.test_decide import make_experience

    make_experience(project)
    decide_post(client, public_key)  # the snapshot is loaded: later requests skip the version check
    trips: list[tuple] = []
    plain = decide_runtime.unit_reads.execute

    def counted(*commands, **where):
        trips.append(commands)
        return plain(*commands, **where)

    monkeypatch.setattr(decide_runtime.unit_reads, "execute", counted)
    assert decide_post(client, public_key, unit="b").status_code == 200
    assert len(trips) == 1, "one round trip"
    assert [c[0] for c in trips[0]] == ["HGETALL", "INCR"], "the limits add exactly one command"


@pytest.mark.django_db
def test_decide__per_key_limit__counts_other_processes_within_one_flush(client, project, public_key, settings):
    import time

    from personalization.models import ApiKey

    settings.KAIROS_DECIDE_PER_KEY_PER_SECOND = 50
    key_id = ApiKey.objects.get(project=project).pk
    time.sleep(1 - time.time() % 1 + 0.02)  # the whole case inside one one-second window
    window = throttle.window_of()
    assert decide_post(client, public_key).status_code == 200
    # Other decide processes have sent 100 requests with this key in this second.
    redis_client.worker().incrby(throttle.key_counter("d", key_id, window), 100)
    decide_runtime.buffer.flush()  # this process adds its count and learns the total
    answer = decide_post(client, public_key)
    assert throttle.window_of() == window, "the machine was too slow to stay in one window"
    assert_throttled(answer, 429, "Authorization")
    assert 0 < redis_client.worker().ttl(throttle.key_counter("d", key_id, window)) <= 2


@pytest.mark.django_db
def test_decide__redis_down__not_limited_and_still_answers(client, project, public_key, settings):
    settings.KAIROS_DECIDE_PER_KEY_PER_SECOND = 1
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()
    assert all(decide_post(client, public_key, unit=f"u{i}").status_code == 200 for i in range(5))


@pytest.mark.django_db
def test_events__over_the_per_key_and_per_ip_limits__429_and_nothing_queued(client, project, public_key, settings):
    settings.KAIROS_EVENTS_PER_KEY_PER_SECOND = 3
    answers = [events_post(client, public_key, [event_make(i)]) for i in range(8)]
    accepted = sum(r.status_code == 200 for r in answers)
    limited = [r for r in answers if r.status_code == 429]
    assert limited and accepted + len(limited) == 8
    assert_throttled(limited[0], 429, "Authorization")
    assert redis_client.worker().xlen(rkeys.EVENTS_STREAM) == accepted, "a refused batch leaves nothing behind"

    settings.KAIROS_EVENTS_PER_KEY_PER_SECOND = 0
    settings.KAIROS_EVENTS_PER_IP_PER_SECOND = 3
    codes = [events_post(client, public_key, [event_make(100 + i)]).status_code for i in range(8)]
    assert 429 in codes


@pytest.mark.django_db
def test_events__project_queue_at_its_cap__503_until_drained(client, project, other_project, public_key, settings):
    settings.KAIROS_STREAM_CAP_PER_PROJECT = 30
    assert events_post(client, public_key, [event_make(i) for i in range(20)]).status_code == 200
    assert events_post(client, public_key, [event_make(i) for i in range(20, 40)]).status_code == 200
    full = events_post(client, public_key, [event_make(99)])
    assert_throttled(full, 503, "events")
    assert int(full["Retry-After"]) == throttle.QUEUE_RETRY_SECONDS
    assert "waiting" in full.json()["error"]["message"]
    assert redis_client.worker().xlen(rkeys.EVENTS_STREAM) == 2, "the refused batch was not appended"
    other_key = key_make(project=other_project)
    assert events_post(client, other_key, [event_make(1)]).status_code == 200, "other projects keep sending"

    while services.events_drain(claim_idle_ms=0):
        pass
    assert events_post(client, public_key, [event_make(99)]).status_code == 200, "room again once drained"


@pytest.mark.django_db
def test_decide__exposures_count_toward_the_project_queue(client, project, public_key):
    from tests.personalization.test_decide import make_experience

    make_experience(project)
    for i in range(10):
        decide_post(client, public_key, unit=f"x{i}")
    decide_runtime.buffer.flush()
    queued = int(redis_client.worker().hget(rkeys.EVENTS_QUEUED, str(project.pk)) or 0)
    assert queued == 10
    while services.events_drain(claim_idle_ms=0):
        pass
    assert not redis_client.worker().hget(rkeys.EVENTS_QUEUED, str(project.pk))
