"""Settings → Dead letters: the count and samples for admins only, retry and delete."""

import pytest

from personalization import redis_client, rkeys
from personalization.ingest.dead_letters import dead_letters_write
from tests import factories


def dead_make(project, n: int) -> None:
    dead_letters_write(
        dead=[
            (project.pk, {"event_id": f"bad-{i}", "anonymous_id": f"v\x00{i}", "type": "page_view"}, "DataError: NUL")
            for i in range(n)
        ]
    )


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["developer", "marketer", "analyst", "compliance"])
def test_dead_letters__not_admin__forbidden_and_not_shown(client, project, role):
    dead_make(project, 2)
    client.force_login(factories.member_make(project=project, role=role))
    assert client.get("/settings/dead-letters").status_code == 403
    assert client.post("/settings/dead-letters/delete").status_code == 403
    if role == "developer":
        assert "Dead letters" not in client.get("/settings/").content.decode()
    assert project.dead_letters.count() == 2


@pytest.mark.django_db
def test_dead_letters__admin__count_and_samples_then_retry_one_and_delete_all(client, project, other_project):
    dead_make(project, 7)
    dead_make(other_project, 3)
    client.force_login(factories.member_make(project=project, role="admin"))
    page = client.get("/settings/").content.decode()
    assert 'id="dead-letter-count">7<' in page and "bad-6" in page and "v\\u00006" in page
    assert "bad-0" not in page, "samples are the newest five"

    one = project.dead_letters.get(event_id="bad-3")
    partial = client.post("/settings/dead-letters/retry", {"id": one.pk}, HTTP_HX_REQUEST="true").content.decode()
    assert "1 sent back to the drain" in partial and 'id="dead-letter-count">6<' in partial
    assert redis_client.worker().xlen(rkeys.EVENTS_STREAM) == 1

    response = client.post("/settings/dead-letters/delete")
    assert response.status_code == 302
    assert project.dead_letters.count() == 0 and other_project.dead_letters.count() == 3
    assert "No dead letters" in client.get("/settings/dead-letters").content.decode()


@pytest.mark.django_db
def test_dead_letters__bad_action_or_id__400(client, project):
    client.force_login(factories.member_make(project=project, role="admin"))
    assert client.post("/settings/dead-letters/explode").status_code == 400
    assert client.post("/settings/dead-letters/retry", {"id": "1; drop"}).status_code == 400
