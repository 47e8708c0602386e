"""Housekeeping: the suppression list heals a Redis that lost it, old exports are deleted."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from personalization import redis_client, rkeys
from privacy import services as privacy_services
from privacy.models import DataSubjectRequest, Suppression
from privacy.tasks import privacy_housekeeping_task
from tests.factories import privacy_request_make


@pytest.mark.django_db
def test_housekeeping__redis_lost_the_suppression_list__copied_back(project):
    privacy_services.subject_erase(request=privacy_request_make(project=project, kind="erasure", user_id="gone"))
    digests = {s.encode() for s in Suppression.objects.filter(project=project).values_list("digest", flat=True)}
    assert digests
    redis_client.worker().delete(rkeys.suppressed(project.pk))
    result = privacy_housekeeping_task()
    assert result["suppressed"] == len(digests)
    assert redis_client.worker().smembers(rkeys.suppressed(project.pk)) == digests


@pytest.mark.django_db
def test_housekeeping__export_past_its_keep_period__file_deleted(project, settings):
    request = privacy_request_make(project=project, kind="access", user_id="someone")
    path = privacy_services.subject_export(request=request)
    fresh = privacy_request_make(project=project, kind="access", user_id="other")
    fresh_path = privacy_services.subject_export(request=fresh)
    old = datetime.now(UTC) - timedelta(days=settings.KAIROS_EXPORT_KEEP_DAYS + 1)
    DataSubjectRequest.objects.filter(pk=request.pk).update(completed_at=old)
    assert privacy_housekeeping_task()["exports_deleted"] == 1
    assert not Path(path).exists() and Path(fresh_path).exists()
    request.refresh_from_db()
    assert request.export_path == ""
