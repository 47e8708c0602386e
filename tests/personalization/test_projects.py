"""Projects: create (the creator becomes admin), rename and delete from the dashboard, the REST API
and `manage.py project_create`; the first-run page for someone with no project."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from personalization import services
from personalization.models import ApiKey, Event, Membership, Project, Role
from personalization.workspace import auth
from tests import factories


@pytest.fixture
def newcomer(client, db):
    user = factories.user_make()
    client.force_login(user)
    return user


def test_first_run__no_project__says_what_to_do(client, newcomer):
    body = client.get("/").content.decode()
    assert "Create your first project" in body and "Settings → API keys" in body


def test_project_new__creator_becomes_admin_and_lands_on_keys(client, newcomer):
    response = client.post("/projects/new", {"name": "  Acme   shop "})
    assert response.status_code == 302 and response["Location"] == "/settings/"
    project = Project.objects.get(name="Acme shop")
    assert project.slug == "acme-shop"
    assert Membership.objects.get(project=project, user=newcomer).role == Role.ADMIN
    assert "Acme shop" in client.get("/settings/").content.decode()
    again = client.post("/projects/new", {"name": "Acme shop"})  # same name: a slug of its own
    assert again.status_code == 302 and Project.objects.filter(slug="acme-shop-2").exists()


def test_project_new__empty_name__400_naming_the_field(client, newcomer):
    response = client.post("/projects/new", {"name": "   "})
    assert response.status_code == 400 and "name: is required" in response.content.decode()
    assert not Project.objects.exists()


def test_project_rename_and_delete__admin_only__confirmed_by_name(client, project):
    marketer = factories.member_make(project=project, role="marketer")
    client.force_login(marketer)
    client.post("/settings/project/rename", {"name": "Hijacked"})
    project.refresh_from_db()
    assert project.name == "Shop A"  # a marketer cannot (and cannot open Settings at all)

    admin = factories.member_make(project=project, role="admin")
    client.force_login(admin)
    client.post("/settings/project/rename", {"name": "Shop A (EU)"})
    project.refresh_from_db()
    assert project.name == "Shop A (EU)"
    factories.key_make(project=project)
    client.post("/settings/project/delete", {"confirm": "wrong"})
    assert Project.objects.filter(pk=project.pk).exists()
    client.post("/settings/project/delete", {"confirm": "Shop A (EU)"})
    assert not Project.objects.filter(pk=project.pk).exists()
    assert not ApiKey.objects.filter(project_id=project.pk).exists()


def test_projects_api__session_creates__key_renames_and_deletes_only_its_own(client, newcomer, other_project):
    created = client.post("/api/v1/projects/", {"name": "Beta"}, content_type="application/json")
    assert created.status_code == 201, created.content
    project = Project.objects.get(pk=created.json()["id"])
    assert Membership.objects.get(project=project, user=newcomer).role == Role.ADMIN
    bad = client.post("/api/v1/projects/", {"name": ""}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "name"

    client.logout()
    secret = {"HTTP_AUTHORIZATION": f"Bearer {factories.key_make(project=project, kind='secret')}"}
    renamed = client.patch(
        f"/api/v1/projects/{project.pk}/", {"name": "Beta 2"}, content_type="application/json", **secret
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "Beta 2"
    assert (
        client.patch(
            f"/api/v1/projects/{other_project.pk}/", {"name": "x"}, content_type="application/json", **secret
        ).status_code
        == 404
    )
    assert (
        client.post("/api/v1/projects/", {"name": "Gamma"}, content_type="application/json", **secret).status_code
        == 403
    )
    assert client.delete(f"/api/v1/projects/{project.pk}/", **secret).status_code == 400  # no confirm
    assert client.delete(f"/api/v1/projects/{project.pk}/?confirm={project.slug}", **secret).status_code == 204
    assert not Project.objects.filter(pk=project.pk).exists()
    auth.cache_clear()


def test_project_create_command__owner_admin_and_keys_that_work(client, db):
    owner = factories.user_make(username="alice")
    out = io.StringIO()
    call_command("project_create", "Acme shop", "--owner", "alice", "--keys", stdout=out)
    project = Project.objects.get(name="Acme shop")
    assert Membership.objects.get(project=project, user=owner).role == Role.ADMIN
    public = next(line.split(": ")[1] for line in out.getvalue().splitlines() if line.startswith("public key"))
    response = factories.events_post(client, public, [factories.event_make(1)])
    assert response.status_code == 200 and response.json()["accepted"] == 1
    with pytest.raises(CommandError, match="no such user"):
        call_command("project_create", "Other", "--owner", "nobody")


@pytest.mark.django_db
def test_project_delete__queued_events__dropped_not_stuck(client, project, public_key):
    factories.events_post(client, public_key, [factories.event_make(1)])
    services.project_delete(project=project, confirm=project.slug)
    assert services.events_drain(claim_idle_ms=0) == 0
    assert not Event.objects.exists()
