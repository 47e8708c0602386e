import orjson
import pytest
from django.test import Client

from personalization import rkeys, services
from personalization.models import Event, Profile
from tests.factories import event_make


def post_events(client: Client, key: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes | str) else orjson.dumps(body)
    response = client.post(
        "/api/v1/events", data=data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    return response.status_code, response.json()


def drain_all() -> int:
    total = 0
    while moved := services.events_drain(claim_idle_ms=0):
        total += moved
    return total


@pytest.mark.django_db
def test_events__valid_batch__accepted_then_drained_once(client, project, public_key):
    status, body = post_events(client, public_key, {"events": [event_make(i) for i in range(20)]})
    assert status == 200
    assert body["accepted"] == 20 and body["rejected"] == []
    assert Event.objects.count() == 0, "the request writes only to the stream"
    assert drain_all() == 20
    assert Event.objects.filter(project=project).count() == 20
    assert Profile.objects.filter(project=project).count() == 7
    # the same batch again is stored once: idempotent on (project, event_id)
    post_events(client, public_key, {"events": [event_make(i) for i in range(20)]})
    drain_all()
    assert Event.objects.filter(project=project).count() == 20


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        ({"evnts": []}, "events"),
        ({"events": []}, "events"),
        ({"events": [event_make(i) for i in range(1001)]}, "events"),
        ([1, 2], "body"),
    ],
)
def test_events__malformed_batch__400_with_field_and_nothing_stored(client, project, public_key, body, field):
    status, answer = post_events(client, public_key, body)
    assert status == 400
    assert answer["error"]["field"] == field
    assert answer["error"]["message"]
    from personalization import redis_client

    assert redis_client.worker().xlen(rkeys.EVENTS_STREAM) == 0
    assert drain_all() == 0 and Event.objects.count() == 0


@pytest.mark.django_db
def test_events__one_bad_event__stores_good_ones_and_reports_bad(client, project, public_key):
    events = [event_make(0), event_make(1, type="purchase", properties={}), event_make(2)]
    status, body = post_events(client, public_key, {"events": events})
    assert status == 200
    assert body["accepted"] == 2
    assert body["rejected"] == [{"index": 1, "field": "value", "message": body["rejected"][0]["message"]}]
    assert "purchase" in body["rejected"][0]["message"]
    drain_all()
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["ev-0", "ev-2"]


@pytest.mark.django_db
def test_events__every_event_bad__400_and_nothing_stored(client, project, public_key):
    status, body = post_events(client, public_key, {"events": [{"type": "click"}]})
    assert status == 400
    assert body["rejected"][0]["field"] == "event_id"
    assert drain_all() == 0


@pytest.mark.django_db
def test_events__repeated_click_within_500ms__dropped_as_noise(client, project, public_key):
    base = {"type": "click", "anonymous_id": "a1", "properties": {"target": "#buy"}}
    events = [
        {**base, "event_id": "c1", "timestamp": 1_764_000_000_000},
        {**base, "event_id": "c2", "timestamp": 1_764_000_000_200},  # 200 ms later: noise
        {**base, "event_id": "c3", "timestamp": 1_764_000_000_900},  # 900 ms later: a real click
    ]
    from datetime import UTC, datetime

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for i, e in enumerate(events):
        e["timestamp"] = now_ms - 5000 + (e["timestamp"] - 1_764_000_000_000)
        assert e["event_id"] == f"c{i + 1}"
    status, body = post_events(client, public_key, {"events": events})
    assert status == 200
    assert body["accepted"] == 2 and body["dropped_noise"] == 1


@pytest.mark.django_db
def test_events__no_key__401_and_unknown_key__401(client, project):
    response = client.post("/api/v1/events", data=b"{}", content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["field"] == "Authorization"
    status, _ = post_events(client, "kp_not-a-real-key", {"events": [event_make(1)]})
    assert status == 401


@pytest.mark.django_db
def test_events__identify__stitches_anonymous_profile_to_user(client, project, public_key):
    post_events(client, public_key, {"events": [event_make(1, anonymous_id="dev-1")]})
    drain_all()
    anon_profile = Profile.objects.get(project=project)
    identify = {
        "event_id": "id-1",
        "type": "identify",
        "anonymous_id": "dev-1",
        "user_id": "u-42",
        "properties": {"attributes": {"plan": "pro"}},
    }
    post_events(client, public_key, {"events": [identify, event_make(2, anonymous_id=None, user_id="u-42")]})
    drain_all()
    profile = Profile.objects.get(project=project)
    assert profile.pk == anon_profile.pk
    assert profile.external_id == "u-42"
    assert profile.attributes == {"plan": "pro"}
    assert Event.objects.filter(profile=profile).count() == 3


@pytest.mark.django_db
def test_events__identify_into_existing_user__merges_anonymous_profile(client, project, public_key):
    post_events(client, public_key, {"events": [event_make(1, anonymous_id=None, user_id="u-1")]})
    drain_all()
    post_events(client, public_key, {"events": [event_make(2, anonymous_id="phone-1")]})
    drain_all()
    assert Profile.objects.filter(project=project).count() == 2
    identify = {"event_id": "id-2", "type": "identify", "anonymous_id": "phone-1", "user_id": "u-1"}
    post_events(client, public_key, {"events": [identify]})
    drain_all()
    profile = Profile.objects.get(project=project)
    assert profile.external_id == "u-1"
    assert Event.objects.filter(profile=profile).count() == 3


@pytest.mark.django_db
def test_events__redis_down__503_and_client_told_to_retry(client, project, public_key, settings):
    from personalization import redis_client

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.reset()
    status, body = post_events(client, public_key, {"events": [event_make(1)]})
    assert status == 503
    assert "retry" in body["error"]["message"]


@pytest.mark.django_db
def test_drain__events_of_a_deleted_project__dropped_not_blocking(client, project, other_project, public_key):
    from tests.factories import key_make

    other_key = key_make(project=other_project)
    post_events(client, other_key, {"events": [event_make(1)]})
    post_events(client, public_key, {"events": [event_make(2)]})
    other_project.delete()
    assert drain_all() == 1
    assert Event.objects.filter(project=project).count() == 1
    from personalization import redis_client

    assert redis_client.worker().xlen(rkeys.EVENTS_STREAM) == 0


@pytest.mark.django_db
def test_identify__merge__keeps_each_experience_first_exposure(client, project, public_key):
    from personalization.models import Exposure
    from tests.factories import external_experience_make

    external_experience_make(project=project, key="hero")
    external_experience_make(project=project, key="banner", variants=("off", "on"))

    def exposure(event_id, who, experience, variant, minutes_ago):
        from datetime import UTC, datetime, timedelta

        ts = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
        return {
            "event_id": event_id,
            "type": "exposure",
            **who,
            "timestamp": ts,
            "properties": {"experience": experience, "variant": variant},
        }

    post_events(
        client,
        public_key,
        {
            "events": [
                exposure("x1", {"user_id": "u-9"}, "hero", "a", 10),
                exposure("x2", {"anonymous_id": "tab-9"}, "hero", "b", 20),  # earlier: kept
                exposure("x3", {"anonymous_id": "tab-9"}, "banner", "on", 5),
            ]
        },
    )
    drain_all()
    post_events(
        client,
        public_key,
        {"events": [{"event_id": "id-9", "type": "identify", "anonymous_id": "tab-9", "user_id": "u-9"}]},
    )
    drain_all()
    profile = Profile.objects.get(project=project)
    kept = dict(Exposure.objects.filter(profile=profile).values_list("experience_key", "variant_key"))
    assert kept == {"hero": "b", "banner": "on"}
