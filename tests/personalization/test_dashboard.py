from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.models import LiftReport, ReportStatus
from tests import factories


@pytest.fixture
def admin_client(client, project):
    client.force_login(factories.member_make(project=project, role="admin"))
    return client


@pytest.mark.django_db
def test_overview__no_report__explains_where_lift_comes_from(admin_client):
    body = admin_client.get("/").content.decode()
    assert "No lift report yet" in body and "Running experiences" in body


@pytest.mark.django_db
def test_overview__global_report_done__shows_its_headline(admin_client, project):
    end = timezone.now()
    LiftReport.objects.create(
        project=project,
        start=end - timedelta(days=14),
        end=end,
        span="days:14",
        status=ReportStatus.DONE,
        result={"empty": False, "sentences": ["Personalization added 0.41 points of conversion."]},
    )
    assert "Personalization added 0.41 points" in admin_client.get("/").content.decode()


@pytest.mark.django_db
def test_overview__other_projects_data__never_shown(admin_client, other_project):
    end = timezone.now()
    LiftReport.objects.create(
        project=other_project,
        start=end - timedelta(days=14),
        end=end,
        span="days:14",
        status=ReportStatus.DONE,
        result={"empty": False, "sentences": ["Secret headline of B."]},
    )
    assert "Secret headline of B." not in admin_client.get("/").content.decode()
