"""GET /api/v1/segments/ and /api/v1/segments/<key>/: list (paged, by kind and run), detail, auth, 404."""

import pytest

from personalization.models import Role
from segments import services
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(project):
    people = factories.profiles_make(project=project, count=20)
    old = factories.clustering_run_make(project=project, members=[people[:12], people[12:]], names=["Trail", "Yoga"])
    new = factories.clustering_run_make(project=project, members=[people[:5], people[5:9], people[9:]])
    services.rule_segment_save(
        project=project,
        key="pro-plan",
        name="Pro plan",
        definition={"attributes": [{"attribute": "plan", "op": "eq", "value": "pro"}], "events": []},
    )
    return old, new


def _get(client, url, key):
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")


def test_list__secret_key__every_segment_newest_run_first_paged(client, secret_key, runs):
    old, new = runs
    body = _get(client, "/api/v1/segments/", secret_key).json()
    keys = [row["key"] for row in body["results"]]
    assert body["count"] == 6
    assert keys == [f"b{new.pk}.0", f"b{new.pk}.1", f"b{new.pk}.2", f"b{old.pk}.0", f"b{old.pk}.1", "pro-plan"]
    first = body["results"][3]
    assert first == {"key": f"b{old.pk}.0", "name": "Trail", "kind": "behavior", "size": 12, "run": old.pk,
                     "created_at": first["created_at"]}  # fmt: skip
    page = _get(client, "/api/v1/segments/?limit=2&offset=2", secret_key).json()
    assert [row["key"] for row in page["results"]] == keys[2:4] and "offset=4" in page["next"]


def test_list__filters_by_kind_and_run(client, secret_key, runs):
    old, _ = runs
    rules = _get(client, "/api/v1/segments/?kind=rule", secret_key).json()
    assert [row["key"] for row in rules["results"]] == ["pro-plan"] and rules["results"][0]["run"] is None
    of_old = _get(client, f"/api/v1/segments/?run={old.pk}", secret_key).json()
    assert [row["key"] for row in of_old["results"]] == [f"b{old.pk}.0", f"b{old.pk}.1"]
    assert _get(client, "/api/v1/segments/?kind=lookalike", secret_key).json()["count"] == 0


@pytest.mark.parametrize(
    ("query", "field"), [("kind=cluster", "kind"), ("run=abc", "run"), ("run=-1", "run"), ("run=99999999999999", "run")]
)
def test_list__bad_filter__400_names_the_field(client, secret_key, runs, query, field):
    response = _get(client, f"/api/v1/segments/?{query}", secret_key)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field and response.json()["error"]["message"]


def test_list__unfinished_run__not_listed(client, project, secret_key):
    people = factories.profiles_make(project=project, count=4)
    factories.clustering_run_make(project=project, members=[people], status="running")
    assert _get(client, "/api/v1/segments/", secret_key).json()["count"] == 0


def test_detail__behavior_segment__name_kind_size_run_top_features(client, secret_key, runs):
    old, _ = runs
    response = _get(client, f"/api/v1/segments/b{old.pk}.1/", secret_key)
    assert response.status_code == 200
    body = response.json()
    assert (body["key"], body["name"], body["kind"], body["size"], body["run"]) == (
        f"b{old.pk}.1",
        "Yoga",
        "behavior",
        8,
        old.pk,
    )
    assert body["top_features"] == [{"feature": "category: group 1", "ratio": 3.0}]
    assert body["behaviors_more"] == [] and "conversion_rate" in body


def test_detail__rule_segment__definition(client, secret_key, runs):
    body = _get(client, "/api/v1/segments/pro-plan/", secret_key).json()
    assert body["kind"] == "rule" and body["definition"]["attributes"][0]["attribute"] == "plan"


def test_detail__unknown_or_other_projects_key__404(client, secret_key, other_project, runs):
    assert _get(client, "/api/v1/segments/no-such/", secret_key).status_code == 404
    factories.profiles_make(project=other_project, count=1)
    services.rule_segment_save(
        project=other_project,
        key="theirs",
        name="Theirs",
        definition={"attributes": [{"attribute": "plan", "op": "eq", "value": "pro"}], "events": []},
    )
    response = _get(client, "/api/v1/segments/theirs/", secret_key)
    assert response.status_code == 404 and "GET /api/v1/segments/" in response.json()["detail"]
    assert "theirs" not in str(_get(client, "/api/v1/segments/", secret_key).json())


def test_auth__no_key_or_public_key__refused(client, public_key, runs):
    assert client.get("/api/v1/segments/").status_code in (401, 403)
    assert _get(client, "/api/v1/segments/", public_key).status_code in (401, 403)


def test_auth__session_roles(client, project, runs):
    client.force_login(factories.member_make(project=project, role=Role.ANALYST))
    assert client.get("/api/v1/segments/").json()["count"] == 6
    client.force_login(factories.member_make(project=project, role=Role.COMPLIANCE))
    assert client.get("/api/v1/segments/").status_code == 403


def test_schema__segments_endpoints_declared(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    assert "get" in paths["/api/v1/segments/"] and "get" in paths["/api/v1/segments/{key}/"]
    names = {p["name"] for p in paths["/api/v1/segments/"]["get"]["parameters"]}
    assert {"kind", "run", "limit", "offset"} <= names


@pytest.mark.parametrize("key", ["a%00b", "x" * 200, "%F0%9F%98%80", "b1.0%2F.."])
def test_detail__hostile_key__404_not_500(client, secret_key, key):
    response = _get(client, f"/api/v1/segments/{key}/", secret_key)
    assert response.status_code == 404 and response.json()["detail"]
