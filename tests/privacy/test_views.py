"""Pages and REST API of privacy requests: roles, audit, due dates, validation."""

import zipfile
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from personalization.models import AuditEntry, Project
from privacy import services as privacy_services
from privacy.models import DataSubjectRequest, RequestStatus
from privacy.services.requests import add_months, due_dates
from tests.factories import member_make, privacy_request_make
from tests.personalization.test_decide import drain_all, make_experience, post_decide


def logged_in(client, project, role):
    user = member_make(project=project, role=role)
    client.force_login(user)
    return user


def processed_export(project):
    request = privacy_request_make(project=project, kind="access", user_id="nobody")
    privacy_services.subject_export(request=request)
    return request


def test_due_dates__gdpr_one_month_ccpa_45_days_and_10_business_days():
    received = datetime(2026, 1, 31, 12, tzinfo=UTC)  # a Saturday at the end of a month
    assert due_dates(regime="gdpr", received_at=received) == (datetime(2026, 2, 28, 12, tzinfo=UTC), None)
    due, confirm = due_dates(regime="ccpa", received_at=received)
    assert due == received + timedelta(days=45)
    assert confirm == datetime(2026, 2, 13, 12, tzinfo=UTC)  # ten weekdays later
    assert add_months(datetime(2026, 2, 28, tzinfo=UTC), 2) == datetime(2026, 4, 28, tzinfo=UTC)


@pytest.mark.django_db
def test_queue__marketer_sees_nothing_and_cannot_download(client, project):
    request = processed_export(project)
    logged_in(client, project, "marketer")
    assert client.get("/privacy/").status_code == 403
    assert client.get(f"/privacy/requests/{request.pk}/").status_code == 403
    assert client.get(f"/privacy/requests/{request.pk}/export.zip").status_code == 403
    assert client.get("/api/v1/privacy/requests/").status_code == 403
    assert not AuditEntry.objects.filter(action="export_downloaded").exists()


@pytest.mark.django_db
def test_queue__compliance_downloads_export_and_every_access_is_audited(client, project):
    request = processed_export(project)
    user = logged_in(client, project, "compliance")
    assert client.get(f"/privacy/requests/{request.pk}/").status_code == 200
    response = client.get(f"/privacy/requests/{request.pk}/export.zip")
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    with zipfile.ZipFile(__import__("io").BytesIO(content)) as archive:
        assert "summary.txt" in archive.namelist()
    assert client.get(f"/privacy/requests/{request.pk}/certificate.json").status_code == 200
    actions = list(AuditEntry.objects.filter(object_key=request.reference, actor=user).values_list("action", flat=True))
    assert {"viewed", "export_downloaded", "certificate_downloaded"} <= set(actions)


@pytest.mark.django_db
def test_export__expired_link__not_served(client, project):
    request = processed_export(project)
    DataSubjectRequest.objects.filter(pk=request.pk).update(export_expires_at=datetime.now(UTC) - timedelta(hours=1))
    logged_in(client, project, "compliance")
    response = client.get(f"/privacy/requests/{request.pk}/export.zip")
    assert response.status_code == 302


@pytest.mark.django_db
def test_create__from_the_page__queued_with_due_date_and_audited(client, project):
    user = logged_in(client, project, "compliance")
    response = client.post(
        "/privacy/requests/new", {"kind": "erasure", "regime": "gdpr", "user_id": "u-9", "verification": "email"}
    )
    request = DataSubjectRequest.objects.get(project=project)
    assert response.status_code == 302 and response["Location"] == f"/privacy/requests/{request.pk}/"
    assert request.status == RequestStatus.VERIFIED
    assert request.due_at == add_months(request.received_at, 1)
    trail = AuditEntry.objects.filter(object_key=request.reference).order_by("pk")
    assert [(e.action, e.actor) for e in trail] == [("received", user), ("verified", user)]
    page = client.get("/privacy/").content.decode()
    assert request.reference in page


@pytest.mark.django_db
def test_create__no_identifier__error_names_the_field_and_nothing_saved(client, project):
    logged_in(client, project, "compliance")
    response = client.post("/privacy/requests/new", {"kind": "erasure", "regime": "gdpr"}, follow=True)
    assert "identifiers: give at least one of user_id, anonymous_id or email" in response.content.decode()
    assert not DataSubjectRequest.objects.exists()


@pytest.mark.django_db
def test_queue__overdue_and_due_soon_are_flagged(client, project):
    for days_left in (-2, 3, 20):
        request = privacy_services.dsr_create(project_id=project.pk, kind="access", identifiers={"user_id": "x"})
        DataSubjectRequest.objects.filter(pk=request.pk).update(due_at=datetime.now(UTC) + timedelta(days=days_left))
    logged_in(client, project, "compliance")
    response = client.get("/privacy/")
    assert response.context["counts"] == {"open": 3, "overdue": 1, "due_soon": 1}
    assert [r.due_state for r in response.context["requests"]] == ["overdue", "due_soon", "ok"]


@pytest.mark.django_db
def test_extend__gdpr_two_months_once(project):
    request = privacy_services.dsr_create(project_id=project.pk, kind="access", identifiers={"user_id": "x"})
    first_due = request.due_at
    privacy_services.dsr_extend(request=request, reason="complex request", by=None)
    assert request.due_at == add_months(first_due, 2)
    with pytest.raises(privacy_services.RequestError, match="already extended"):
        privacy_services.dsr_extend(request=request, reason="again", by=None)


@pytest.mark.django_db
def test_api__secret_key_files_request_and_reads_status(client, project, secret_key, other_project):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    body = {"kind": "erasure", "regime": "ccpa", "identifiers": {"user_id": "api-user"}, "verification": "sso"}
    response = client.post(
        "/api/v1/privacy/requests/", data=orjson.dumps(body), content_type="application/json", **auth
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["status"] == "verified" and created["reference"].startswith("DSR-")
    assert client.get(f"/api/v1/privacy/requests/{created['id']}/", **auth).json()["status"] == "verified"
    other = privacy_services.dsr_create(project_id=other_project.pk, kind="access", identifiers={"user_id": "z"})
    assert client.get(f"/api/v1/privacy/requests/{other.pk}/", **auth).status_code == 404
    bad = {"kind": "erasure", "identifiers": {"phone": "123"}}
    response = client.post("/api/v1/privacy/requests/", data=orjson.dumps(bad), content_type="application/json", **auth)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "identifiers.phone"
    assert DataSubjectRequest.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_api__public_key_refused(client, project, public_key):
    response = client.get("/api/v1/privacy/requests/", HTTP_AUTHORIZATION=f"Bearer {public_key}")
    assert response.status_code in {401, 403}


@pytest.mark.django_db(transaction=True)
def test_consent__required_then_given_through_the_api__personalized(client, project, public_key, secret_key):
    make_experience(project)
    privacy_services.privacy_settings_set(
        project_id=project.pk, require_consent=True, honor_gpc=True, event_retention_days=395, by=None
    )
    _, before = post_decide(client, public_key, {"anonymous_id": "c-1"})
    assert before["assignments"]["hero"]["reason"] == "not_personalized"
    body = {"anonymous_id": "c-1", "purposes": {"personalization": True}}
    response = client.post(
        "/api/v1/privacy/consent/",
        data=orjson.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
    )
    assert response.status_code == 202, response.content
    drain_all()
    _, after = post_decide(client, public_key, {"anonymous_id": "c-1"})
    assert after["assignments"]["hero"]["reason"] != "not_personalized"


@pytest.mark.django_db
def test_gpc__honoured_per_project_setting(client, project, public_key):
    make_experience(project)

    def decide_with_gpc():
        response = client.post(
            "/api/v1/decide",
            data=orjson.dumps({"anonymous_id": "g-1"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {public_key}",
            HTTP_SEC_GPC="1",
        )
        return response.json()["assignments"]["hero"]["reason"]

    assert decide_with_gpc() == "not_personalized"
    privacy_services.privacy_settings_set(
        project_id=project.pk, require_consent=False, honor_gpc=False, event_retention_days=395, by=None
    )
    from personalization.decide import runtime as decide_runtime

    decide_runtime.snapshots.by_project.clear()  # the next snapshot check (within a second) sees the change
    assert decide_with_gpc() != "not_personalized"


@pytest.mark.django_db
def test_settings__bad_retention__error_names_the_field(client, project):
    logged_in(client, project, "admin")
    response = client.post("/privacy/settings", {"event_retention_days": "forever"}, follow=True)
    assert "event_retention_days: give a whole number of days" in response.content.decode()


@pytest.mark.django_db
def test_record__lists_every_registered_location_and_downloads(client, project):
    from privacy import registry

    logged_in(client, project, "compliance")
    response = client.get("/privacy/record?download=1")
    text = response.content.decode()
    assert response["Content-Disposition"].startswith("attachment")
    assert all(loc.category in text for loc in registry.locations())
    assert Project.objects.get(pk=project.pk).name in text


@pytest.mark.django_db
def test_retention__old_events_deleted_recent_kept(client, project, public_key):
    from personalization.models import Event, Profile
    from tests.factories import event_make, events_post

    events_post(client, public_key, [event_make(i, event_id=f"r-{i}") for i in range(4)])
    drain_all()
    profile = Profile.objects.filter(project=project).first()
    old = datetime.now(UTC) - timedelta(days=40)
    Event.objects.create(
        project=project, profile=profile, event_id="old", type="page_view", ts=old, received_at=old, properties={}
    )
    privacy_services.privacy_settings_set(
        project_id=project.pk, require_consent=False, honor_gpc=True, event_retention_days=30, by=None
    )
    assert privacy_services.retention_apply() == {"events": {project.pk: 1}, "exposures": {project.pk: 0}}
    assert not Event.objects.filter(event_id="old").exists()
    assert Event.objects.filter(project=project).count() == 4


@pytest.mark.django_db(transaction=True)
def test_consent__snippet_consent_event__recorded_on_the_profile_and_published(client, project, public_key):
    from personalization import redis_client, rkeys
    from personalization.models import Profile
    from tests.factories import event_make, events_post

    consent = event_make(1, event_id="c-1", type="consent", anonymous_id="snip-1", properties={"personalization": True})
    assert events_post(client, public_key, [consent]).status_code == 200
    drain_all()
    profile = Profile.objects.get(project=project, identities__value="snip-1")
    assert profile.consent == {"personalization": True}
    assert redis_client.worker().hget(rkeys.unit(project.pk, "snip-1"), "consent") == b"1"
