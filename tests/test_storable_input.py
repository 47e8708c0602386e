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


def test_rest_json_body__nul_escape__400_and_nothing_written(client, secret_key):
    body = '{"kind": "erasure", "identifiers": {"user_id": "zoe\\u0000"}}'
    answer = client.post(
        "/api/v1/privacy/requests/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret_key}"
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "body"
    assert not DataSubjectRequest.objects.exists()
