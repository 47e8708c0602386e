"""The live session state (field "ls" of the decide unit hash) is personal data: export carries it,
erasure removes it, and objection, do-not-personalize and withdrawn consent clear it at once."""

import zipfile

import orjson
import pytest

from personalization import services
from personalization.models import Profile
from personalization.people.live_session import live_state_parse
from personalization.people.subjects import profiles_consent_set
from privacy import services as privacy_services
from tests.factories import event_make, events_post, live_state_read, privacy_request_make


def _visit(client, project, public_key, user: str, anon: str, tag: str) -> None:
    """Browsing as anon, a cart add once logged in; drained, so the profile links both ids."""
    events = [
        event_make(0, event_id=f"{tag}-view-{i}", anonymous_id=anon, properties={"url": f"/p/{i}", "item": f"i{i}"})
        for i in range(3)
    ]
    events.append(event_make(0, event_id=f"{tag}-id", type="identify", anonymous_id=anon, user_id=user))
    events.append(
        event_make(
            0, event_id=f"{tag}-cart", type="add_to_cart", user_id=user, anonymous_id=anon, properties={"item": "i1"}
        )
    )
    response = events_post(client, public_key, events)
    assert response.status_code == 200 and response.json()["accepted"] == len(events), response.json()["rejected"]
    while services.events_drain(claim_idle_ms=0):
        pass


def _live(project, unit: str) -> dict | None:
    return live_state_read(project.pk, unit)


@pytest.fixture
def visitors(client, project, public_key):
    services.snapshot_publish(project_id=project.pk)  # the events request reads consent settings from it
    _visit(client, project, public_key, "lena", "anon-lena", "l")
    _visit(client, project, public_key, "otto", "anon-otto", "o")
    for unit in ("lena", "anon-lena", "otto", "anon-otto"):
        assert _live(project, unit) is not None, unit
    return project


@pytest.mark.django_db(transaction=True)
def test_export_contains_the_live_state__erasure_removes_it(visitors):
    project = visitors
    path = privacy_services.subject_export(request=privacy_request_make(project=project, kind="access", user_id="lena"))
    with zipfile.ZipFile(path) as archive:
        hashes = orjson.loads(archive.read("data.json"))["locations"]["decide_hash"]
    exported = {row["unit_id"]: live_state_parse(row["fields"]) for row in hashes}
    assert exported == {"lena": _live(project, "lena"), "anon-lena": _live(project, "anon-lena")}
    assert exported["lena"]["ca"] == 1 and exported["anon-lena"]["pv"] == 3

    privacy_services.subject_erase(request=privacy_request_make(project=project, kind="erasure", user_id="lena"))
    assert _live(project, "lena") is None and _live(project, "anon-lena") is None
    assert _live(project, "otto") is not None and _live(project, "anon-otto") is not None


@pytest.mark.django_db(transaction=True)
def test_objection__clears_the_live_state_at_once_and_new_events_keep_none(visitors, client, public_key):
    project = visitors
    privacy_services.subject_object(request=privacy_request_make(project=project, kind="objection", user_id="lena"))
    assert _live(project, "lena") is None and _live(project, "anon-lena") is None
    assert _live(project, "otto") is not None
    response = events_post(client, public_key, [event_make(9, event_id="after", anonymous_id="anon-lena")])
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert _live(project, "anon-lena") is None  # the script keeps nothing for dnp=1


@pytest.mark.django_db(transaction=True)
def test_consent_withdrawn__clears_the_live_state_at_once(visitors):
    project = visitors
    lena = Profile.objects.get(project=project, external_id="lena")
    profiles_consent_set(project_id=project.pk, consents={lena.pk: {"personalization": False}})
    assert _live(project, "lena") is None and _live(project, "anon-lena") is None
    assert _live(project, "otto") is not None
