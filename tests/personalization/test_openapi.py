"""schemathesis against the project's own OpenAPI schema, in process (WSGI), with real keys, the real
PostgreSQL and Redis: bounded (MAX_EXAMPLES per operation and generation mode) and derandomized, so
every run sends the same requests. No answer may be a 5xx, and every answer must be one the schema
declares, with the declared content type and body.

Run it alone: make test PYTEST_ARGS="tests/personalization/test_openapi.py"
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import factories

MAX_EXAMPLES = 25
PUBLIC_PATHS = {"/api/v1/events", "/api/v1/decide"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def keys(project):
    return {
        "public": factories.key_make(project=project, kind="public"),
        "secret": factories.key_make(project=project, kind="secret"),
    }


@pytest.fixture
def wsgi_transaction(db):
    """Like Django's test client: the test's transaction must outlive each request, whose end would
    otherwise close the database connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Loaded when the tests are collected: one test per operation of the schema the project serves.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api__generated_requests__no_5xx_and_answers_match_the_schema(case, keys, wsgi_transaction):
    key = keys["public"] if case.path in PUBLIC_PATHS else keys["secret"]
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)


@pytest.mark.django_db
def test_schema__public_endpoints_and_bearer_schemes_declared(client):
    document = client.get("/api/schema/?format=json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["publicKey"]["scheme"] == "bearer" and schemes["secretKey"]["scheme"] == "bearer"
    assert "cookieAuth" in schemes
    for path in PUBLIC_PATHS:
        operation = document["paths"][path]["post"]
        assert operation["security"] == [{"publicKey": []}]
        assert {"200", "400", "401", "413", "429"} <= set(operation["responses"])
    profiles = document["paths"]["/api/v1/profiles/"]["get"]
    assert {"secretKey": []} in profiles["security"] and {"401", "403"} <= set(profiles["responses"])


@pytest.mark.django_db
@pytest.mark.parametrize("limit", ["1000000", "99999999999999999999999", "-5", "abc", "0"])
def test_rest_list__any_limit__bounded_page(client, project, keys, limit):
    response = client.get(f"/api/v1/profiles/?limit={limit}", HTTP_AUTHORIZATION=f"Bearer {keys['secret']}")
    assert response.status_code == 200
    assert len(response.json()["results"]) <= 500


@pytest.mark.django_db
def test_rest_list__huge_limit__clamped_to_the_maximum(client, project, keys):
    from personalization.models import Profile
    from tests.personalization.test_rest_api import NOW

    Profile.objects.bulk_create(
        [Profile(project=project, external_id=f"p{i}", first_seen=NOW, last_seen=NOW) for i in range(520)]
    )
    page = client.get("/api/v1/profiles/?limit=1000000", HTTP_AUTHORIZATION=f"Bearer {keys['secret']}").json()
    assert len(page["results"]) == 500 and page["count"] == 520 and "limit=500" in page["next"]


@pytest.mark.django_db
@pytest.mark.parametrize("offset", ["99999999999999999999999", "-1", "10000000000"])
def test_rest_list__huge_offset__empty_page_not_500(client, project, keys, offset):
    response = client.get(f"/api/v1/profiles/?offset={offset}", HTTP_AUTHORIZATION=f"Bearer {keys['secret']}")
    assert response.status_code == 200
