"""REST API scoping: every request sees only its key's project."""

from datetime import UTC, datetime

import pytest

from personalization.models import Event, Profile
from tests.factories import key_make

NOW = datetime.now(UTC)


def profile_make(project, external_id):
    profile = Profile.objects.create(project=project, external_id=external_id, first_seen=NOW, last_seen=NOW)
    Event.objects.create(
        project=project,
        profile=profile,
        event_id=f"e-{external_id}",
        type="page_view",
        ts=NOW,
        received_at=NOW,
        properties={"url": "/"},
    )
    return profile


def get(client, url, key):
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.mark.django_db
def test_rest__key_of_project_a__cannot_read_project_b(client, project, other_project, secret_key):
    mine = profile_make(project, "alice")
    theirs = profile_make(other_project, "bob")
    listed = get(client, "/api/v1/profiles/", secret_key).json()
    assert [p["external_id"] for p in listed["results"]] == ["alice"]
    assert get(client, f"/api/v1/profiles/{mine.pk}/", secret_key).status_code == 200
    assert get(client, f"/api/v1/profiles/{theirs.pk}/", secret_key).status_code == 404
    assert get(client, f"/api/v1/profiles/{theirs.pk}/events/", secret_key).status_code == 404
    events = get(client, f"/api/v1/profiles/{mine.pk}/events/", secret_key).json()
    assert [e["event_id"] for e in events["results"]] == ["e-alice"]
    assert get(client, "/api/v1/project/", secret_key).json()["id"] == project.pk


@pytest.mark.django_db
def test_rest__public_key__refused_with_a_clear_message(client, project, public_key):
    response = get(client, "/api/v1/profiles/", public_key)
    assert response.status_code in (401, 403)
    assert "secret key" in response.json()["detail"]


@pytest.mark.django_db
def test_rest__revoked_key__refused(client, project):
    from personalization import services
    from personalization.models import ApiKey
    from personalization.workspace import auth

    raw = key_make(project=project, kind="secret")
    services.api_key_revoke(key=ApiKey.objects.get(project=project, kind="secret"))
    auth.cache_clear()
    assert get(client, "/api/v1/profiles/", raw).status_code in (401, 403)


@pytest.mark.django_db
def test_rest__no_credentials__refused(client, project):
    assert client.get("/api/v1/profiles/").status_code in (401, 403)


@pytest.mark.django_db
def test_keys__stored_only_as_hash_with_enough_randomness(project):
    from personalization.models import ApiKey

    raw = key_make(project=project, kind="secret")
    row = ApiKey.objects.get(project=project)
    assert raw not in (row.key_hash, row.prefix) and len(row.key_hash) == 64
    assert len(raw) - 3 >= 32  # 24 random bytes, url-safe base64: 192 bits


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"variants": [{"key": "a", "is_control": True}]}, "variants"),
        ({"variants": [{"key": "a", "is_control": True, "weight": "NaN"}, {"key": "b"}]}, "variants[0].weight"),
        ({"attribution_hours": 100_000}, "attribution_hours"),
        ({"variants": [{"key": "a b", "is_control": True}, {"key": "b"}]}, "variants[0].key"),
        ({"key": "hero"}, "key"),  # taken
    ],
)
def test_experiences_api__bad_registration__400_naming_the_field(client, project, secret_key, body, field):
    import orjson

    from tests.factories import external_experience_make

    external_experience_make(project=project, key="hero")
    registration = {
        "key": "spring",
        "name": "Spring",
        "external": True,
        "variants": [{"key": "a", "is_control": True}, {"key": "b"}],
        **body,
    }
    response = client.post(
        "/api/v1/experiences/",
        data=orjson.dumps(registration),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
