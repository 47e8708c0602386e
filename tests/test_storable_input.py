"""Dashboard forms and REST bodies refuse what PostgreSQL cannot store (NUL, lone surrogates) with a
400 naming the field, and write nothing (config.security.StorableInputMiddleware)."""

import pytest

from privacy.models import DataSubjectRequest
from segments.models import Segment
from tests import factories


@pytest.fixture
def admin_client(client, project):
    admin = factories.member_make(project=project, role="admin")
    client.force_login(admin)
    return client


@pytest.mark.parametrize(
    ("url", "data", "field"),
    [
        ("/privacy/requests/new", {"kind": "erasure", "user_id": "zoe\x00", "verification": "email"}, "user_id"),
        ("/segments/rules/new", {"name": "Pro\x00", "conditions": "plan = pro"}, "name"),
    ],
)
def test_dashboard_form__unstorable_character__400_naming_the_field_and_nothing_written(admin_client, url, data, field):
    answer = admin_client.post(url, data)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == field
    assert not DataSubjectRequest.objects.exists()
    assert not Segment.objects.exists()


def _privacy_post(client, secret_key, body: str):
    return client.post(
        "/api/v1/privacy/requests/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret_key}"
    )


def test_rest_json_body__nul_escape__400_and_nothing_written(client, secret_key):
    answer = _privacy_post(client, secret_key, '{"kind": "erasure", "identifiers": {"user_id": "zoe\\u0000"}}')
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "identifiers.user_id"
    assert not DataSubjectRequest.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"kind": "erasure", "identifiers": {"user_id": "zoe\\ud800"}}', "identifiers.user_id"),
        ('{"kind": "erasure", "identifiers": {"user_id": "zoe\\uDFFF tail"}}', "identifiers.user_id"),
        ('{"kind": "erasure", "identifiers": {"user_id": "a\\udc00\\ud83d"}}', "identifiers.user_id"),
        ('{"kind": "erasure", "identifiers": {"emails": ["ok@x.io", "\\ud83d@x.io"]}}', "identifiers.emails[1]"),
        ('{"kind": "erasure", "identifiers": {"user_id": "zoe", "\\ud800": "x"}}', "identifiers (a key)"),
    ],
)
def test_rest_json_body__lone_surrogate_escape__400_naming_the_field_and_nothing_written(
    client, secret_key, body, field
):
    answer = _privacy_post(client, secret_key, body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["field"] == field and "lone surrogate" in error["message"]
    assert not DataSubjectRequest.objects.exists()


def test_rest_json_body__surrogate_pair_emoji__accepted(client, secret_key):
    answer = _privacy_post(client, secret_key, '{"kind": "erasure", "identifiers": {"user_id": "zo\\ud83d\\ude00e"}}')
    assert answer.status_code == 201, answer.content
    assert DataSubjectRequest.objects.get().identifiers["user_id"] == "zo\U0001f600e"
