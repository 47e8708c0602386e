"""One audit trail: keys created and revoked, and role changes, are recorded with who did it."""

import pytest

from personalization import services
from personalization.models import ApiKey, AuditEntry
from tests.factories import member_make, user_make


@pytest.mark.django_db
def test_audit__key_created_and_revoked_from_settings__recorded_with_actor(client, project):
    admin = member_make(project=project, role="admin")
    client.force_login(admin)
    client.post("/settings/keys", {"kind": "secret", "name": "backend"})
    key = ApiKey.objects.get(project=project, name="backend")
    client.post(f"/settings/keys/{key.pk}/revoke")
    trail = AuditEntry.objects.filter(project=project, object_type="api_key").order_by("pk")
    assert [(e.action, e.actor) for e in trail] == [("create", admin), ("revoke", admin)]
    assert key.prefix in trail[0].object_key and "ks_" not in trail[0].changes.get("raw", "")


@pytest.mark.django_db
def test_audit__role_change__recorded_once_with_before_and_after(project):
    admin, user = user_make(), user_make()
    services.membership_set(project=project, user=user, role="marketer", by=admin)
    services.membership_set(project=project, user=user, role="marketer", by=admin)  # no change, no entry
    services.membership_set(project=project, user=user, role="compliance", by=admin)
    trail = AuditEntry.objects.filter(project=project, object_type="member").order_by("pk")
    assert [e.changes["role"] for e in trail] == [[None, "marketer"], ["marketer", "compliance"]]
    assert all(e.actor == admin for e in trail)
