"""Acceptance: the export holds exactly the subject's data, checked against the database."""

import csv
import io
import zipfile

import orjson
import pytest

from personalization import redis_client, rkeys
from personalization.models import Event, Exposure, Profile
from personalization.score_fields import UNIT_SCORES_FIELD, scores_pack
from privacy import registry
from privacy import services as privacy_services
from privacy.models import RequestStatus
from segments.models import ProfileEmbedding, SegmentMembership
from tests.factories import events_post, privacy_request_make
from tests.personalization.test_decide import drain_all, make_experience, post_decide
from tests.privacy.test_erasure import pending_post, person_events, profiling_make, subject_everywhere


def access_request(project, **identifiers):
    return privacy_request_make(project=project, kind="access", **identifiers)


@pytest.mark.django_db(transaction=True)
def test_export__exactly_the_subjects_data(client, project, public_key):
    make_experience(project)
    subject_everywhere(client, project, public_key, "erin", "anon-erin", "e")
    subject_everywhere(client, project, public_key, "frank", "anon-frank", "f")
    pending_post(client, public_key, "erin", "e")
    profiling_make(project, "erin")
    profiling_make(project, "frank")
    erin = Profile.objects.get(project=project, external_id="erin")

    request = access_request(project, email="erin@example.com")
    path = privacy_services.subject_export(request=request)

    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        data = orjson.loads(archive.read("data.json"))
        csvs = {
            loc.name: list(csv.DictReader(io.TextIOWrapper(archive.open(f"{loc.name}.csv"), encoding="utf-8")))
            for loc in registry.locations()
        }
        summary = archive.read("summary.txt").decode()
    assert names == {"data.json", "summary.txt"} | {f"{loc.name}.csv" for loc in registry.locations()}
    located = data["locations"]
    db_events = set(Event.objects.filter(profile=erin).values_list("event_id", flat=True))
    assert {row["event_id"] for row in located["events"]} == db_events
    assert {row["event_id"] for row in csvs["events"]} == db_events
    assert len(located["events"]) == len(db_events) == len(csvs["events"])
    db_exposures = list(Exposure.objects.filter(profile=erin).values_list("experience_key", "variant_key"))
    assert [(r["experience_key"], r["variant_key"]) for r in located["exposures"]] == db_exposures
    assert [r["external_id"] for r in located["profiles"]] == ["erin"]
    assert located["profiles"][0]["attributes"] == erin.attributes
    assert {r["value"] for r in located["identities"]} == {"erin", "anon-erin"}
    assert {r["event_id"] for r in located["pending_events"]} == {"e-pending-0", "e-pending-1", "e-pending-2"}
    assert {r["unit_id"] for r in located["decide_hash"]} == {"erin", "anon-erin"}
    everything = orjson.dumps(data).decode() + "".join(orjson.dumps(rows).decode() for rows in csvs.values())
    assert "frank" not in everything and "f-view" not in everything
    assert [r["segment__key"] for r in located["segment_memberships"]] == ["behavior-1", "lookalike-1"]
    assert (
        len(located["embeddings"]) == 1
        and located["embeddings"][0]["vector"][0] == 1.0
        and "Segments you are in: behavior, lookalike" in summary
    )
    assert len(located["meaning_vectors"]) == 1 and located["meaning_vectors"][0]["vector"][0] == 1.0
    assert located["text_vectors"] == [{"texts_with_a_cached_vector": 1}]
    assert "hero" in summary and "fixed_split" in summary and "Recipients" in summary and "purpose" in summary
    request.refresh_from_db()
    assert request.status == RequestStatus.COMPLETED and request.export_path == str(path)
    assert request.certificate["records"]["events"] == len(db_events)


@pytest.mark.django_db(transaction=True)
def test_export__then_erasure__export_file_deleted_too(client, project, public_key):
    events_post(client, public_key, person_events("gina", "anon-gina", 2, "g"))
    drain_all()
    path = privacy_services.subject_export(request=access_request(project, user_id="gina"))
    assert path.exists()
    erase = privacy_request_make(project=project, kind="erasure", user_id="gina")
    certificate = privacy_services.subject_erase(request=erase)
    assert not path.exists()
    assert next(loc for loc in certificate["locations"] if loc["name"] == "export_files")["removed"] == 1


@pytest.mark.django_db(transaction=True)
def test_objection__not_personalized_and_profiling_data_gone(client, project, public_key):
    make_experience(project)
    subject_everywhere(client, project, public_key, "hank", "anon-hank", "h")
    profiling_make(project, "hank")
    request = privacy_request_make(project=project, kind="objection", user_id="hank")
    privacy_services.subject_object(request=request)
    assert Profile.objects.get(project=project, external_id="hank").do_not_personalize is True
    _, answer = post_decide(client, public_key, {"user_id": "hank"})
    assert answer["assignments"]["hero"]["reason"] == "not_personalized"
    assert Event.objects.filter(profile__external_id="hank").exists(), "objection keeps the events"
    hank = Profile.objects.get(project=project, external_id="hank")
    assert not SegmentMembership.objects.filter(profile=hank).exists()
    assert not ProfileEmbedding.objects.filter(profile=hank).exists()


@pytest.mark.django_db(transaction=True)
def test_restriction__then_lift_only_after_subject_told(client, project, public_key):
    make_experience(project)
    subject_everywhere(client, project, public_key, "iris", "anon-iris", "i")
    request = privacy_request_make(project=project, kind="restriction", user_id="iris")
    privacy_services.subject_restrict(request=request)
    _, answer = post_decide(client, public_key, {"user_id": "iris"})
    assert answer["assignments"]["hero"]["reason"] == "not_personalized"
    request.refresh_from_db()
    with pytest.raises(privacy_services.RequestError) as error:
        privacy_services.restriction_lift(request=request, subject_notified=False, by=None)
    assert error.value.field == "subject_notified"
    privacy_services.restriction_lift(request=request, subject_notified=True, by=None)
    assert Profile.objects.get(project=project, external_id="iris").do_not_personalize is False


@pytest.mark.django_db(transaction=True)
def test_export_objection_erasure__cover_the_behavior_segments_recorded_at_exposure(client, project, public_key):
    make_experience(project)
    for person in ("ivy", "jon"):
        redis_client.worker().hset(rkeys.unit(project.pk, person), "segs", "b3.1 repeat-buyers")
        subject_everywhere(client, project, public_key, person, f"anon-{person}", person[0])
    ivy = Profile.objects.get(project=project, external_id="ivy")
    assert list(Exposure.objects.filter(profile=ivy).values_list("behavior_segments", flat=True)) == [
        ["b3.1", "repeat-buyers"]
    ]

    path = privacy_services.subject_export(request=access_request(project, user_id="ivy"))
    with zipfile.ZipFile(path) as archive:
        located = orjson.loads(archive.read("data.json"))["locations"]
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open("exposure_segments.csv"), encoding="utf-8")))
    assert [(r["experience_key"], r["behavior_segments"]) for r in located["exposure_segments"]] == [
        ("hero", ["b3.1", "repeat-buyers"])
    ]
    assert "b3.1" in rows[0]["behavior_segments"] and "repeat-buyers" in rows[0]["behavior_segments"]

    # Objection to profiling: the exposure stays (measurement), the segments recorded with it go.
    certificate = privacy_services.subject_object(
        request=privacy_request_make(project=project, kind="objection", user_id="ivy")
    )
    assert certificate["profiling_data_deleted"]["exposure_segments"] == 1
    assert list(Exposure.objects.filter(profile=ivy).values_list("behavior_segments", flat=True)) == [None]
    jon = Profile.objects.get(project=project, external_id="jon")
    assert list(Exposure.objects.filter(profile=jon).values_list("behavior_segments", flat=True)) == [
        ["b3.1", "repeat-buyers"]
    ]

    privacy_services.subject_erase(request=privacy_request_make(project=project, kind="erasure", user_id="jon"))
    assert not Exposure.objects.filter(behavior_segments__contains=["repeat-buyers"]).exists()
    assert Exposure.objects.filter(profile=ivy).exists()


@pytest.mark.django_db(transaction=True)
def test_export_objection_erasure__cover_the_live_facts_and_scores_recorded_at_exposure(client, project, public_key):
    """What decide knew at exposure (stage, device, predictive scores: CUPAC's covariate) is profiling:
    exported, cleared on objection while the exposure stays, gone with the exposure on erasure."""
    make_experience(project)
    for person in ("kim", "lou"):
        scores = scores_pack({"likely_to_buy": (0.73, 12.0)})
        redis_client.worker().hset(rkeys.unit(project.pk, person), UNIT_SCORES_FIELD, scores)
        subject_everywhere(client, project, public_key, person, f"anon-{person}", person[0])
    kim = Profile.objects.get(project=project, external_id="kim")
    assert Exposure.objects.get(profile=kim).live["scores"] == {"likely_to_buy": 0.73}

    path = privacy_services.subject_export(request=access_request(project, user_id="kim"))
    with zipfile.ZipFile(path) as archive:
        located = orjson.loads(archive.read("data.json"))["locations"]
    assert [(r["experience_key"], r["live"]["scores"]) for r in located["exposure_live"]] == [
        ("hero", {"likely_to_buy": 0.73})
    ]

    certificate = privacy_services.subject_object(
        request=privacy_request_make(project=project, kind="objection", user_id="kim")
    )
    assert certificate["profiling_data_deleted"]["exposure_live"] == 1
    assert list(Exposure.objects.filter(profile=kim).values_list("live", flat=True)) == [None]
    lou = Profile.objects.get(project=project, external_id="lou")
    assert Exposure.objects.get(profile=lou).live["scores"] == {"likely_to_buy": 0.73}

    privacy_services.subject_erase(request=privacy_request_make(project=project, kind="erasure", user_id="lou"))
    assert not Exposure.objects.filter(live__scores__likely_to_buy=0.73).exists()
    assert Exposure.objects.filter(profile=kim).exists()
