"""Acceptance: erasure is complete, verified, survives a crash, and erased subjects stay out."""

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.db import connection

from personalization import redis_client, rkeys
from personalization.ingest.dead_letters import dead_letters_write
from personalization.models import AuditEntry, DeadLetter, Event, Exposure, Profile, ProfileIdentity
from privacy import registry
from privacy import services as privacy_services
from privacy.models import DataSubjectRequest, RequestStatus, Suppression
from segments import text_encoder
from segments.embedding import DIMS
from segments.models import TEXT_DIMS, ProfileEmbedding, ProfileMeaning, Segment, SegmentMembership, TextEmbedding
from tests.factories import event_make, events_post, privacy_request_make, rows_copy
from tests.personalization.test_decide import drain_all, make_experience, post_decide
from tests.personalization.test_drain_crash import ROOT, drain_env, process_kill


def person_events(user: str, anon: str, n: int, tag: str) -> list[dict]:
    """An anonymous visit, a login (identify) and purchases."""
    events = [
        event_make(0, event_id=f"{tag}-view-{i}", anonymous_id=anon, properties={"url": f"/p/{i}"}) for i in range(n)
    ]
    events.append(
        event_make(
            0,
            event_id=f"{tag}-identify",
            type="identify",
            anonymous_id=anon,
            user_id=user,
            properties={"attributes": {"email": f"{user}@example.com", "plan": "pro"}},
        )
    )
    events.append(
        event_make(0, event_id=f"{tag}-search", type="search", anonymous_id=anon, properties={"query": _query(user)})
    )
    events.append(
        event_make(0, event_id=f"{tag}-buy", type="purchase", user_id=user, anonymous_id=anon, value=42, properties={})
    )
    return events


def _query(user: str) -> str:
    return f"hotel near the station for {user}"


def erasure_request(project, **identifiers) -> DataSubjectRequest:
    return privacy_request_make(project=project, kind="erasure", **identifiers)


def subject_rows(project, user: str, anon: str) -> dict[str, int]:
    """Direct queries, independent of the registry's own verification."""
    profiles = set(
        ProfileIdentity.objects.filter(project=project, value__in=[user, anon]).values_list("profile_id", flat=True)
    )
    profiles |= set(Profile.objects.filter(project=project, external_id=user).values_list("pk", flat=True))
    stream = [
        e
        for _, fields in redis_client.worker().xrange(rkeys.EVENTS_STREAM)
        if fields
        for e in orjson.loads(fields[b"d"])
        if user in (e.get("user_id"), e.get("anonymous_id")) or anon in (e.get("user_id"), e.get("anonymous_id"))
    ]
    client = redis_client.worker()
    return {
        "profiles": len(profiles),
        "profiles_by_email": Profile.objects.filter(project=project, attributes__email=f"{user}@example.com").count(),
        "identities": ProfileIdentity.objects.filter(project=project, value__in=[user, anon]).count(),
        "events": Event.objects.filter(profile_id__in=profiles).count(),
        "exposures": Exposure.objects.filter(profile_id__in=profiles).count(),
        "decide_hashes": client.exists(rkeys.unit(project.pk, user), rkeys.unit(project.pk, anon)),
        "stream": len(stream),
        "segment_memberships": SegmentMembership.objects.filter(profile_id__in=profiles).count(),
        "embeddings": ProfileEmbedding.objects.filter(profile_id__in=profiles).count(),
        "meaning_vectors": ProfileMeaning.objects.filter(profile_id__in=profiles).count(),
        "text_vectors": TextEmbedding.objects.filter(digest=text_encoder.text_digest(_query(user))).count(),
        "dead_letters": DeadLetter.objects.filter(project=project, user_id=user).count()
        + DeadLetter.objects.filter(project=project, anonymous_id=anon).count(),
    }


def subject_everywhere(client, project, public_key, user: str, anon: str, tag: str) -> None:
    """Data in every registered location: events, exposures, sticky assignments, pending stream entries."""
    assert events_post(client, public_key, person_events(user, anon, 5, tag)).status_code == 200
    drain_all()
    status, answer = post_decide(client, public_key, {"user_id": user})
    assert status == 200 and answer["assignments"]["hero"]["variant"]
    drain_all()  # the exposure


def dead_letter_make(project, user: str, anon: str, tag: str) -> None:
    """An event of the person that PostgreSQL refused, kept as a dead letter by the drain's service."""
    event = event_make(0, event_id=f"{tag}-dead", user_id=user, anonymous_id=anon)
    dead_letters_write(dead=[(project.pk, event, "DataError: value too long")])


def profiling_make(project, user: str) -> None:
    """What segments derive about the person: a behavior segment, a lookalike audience, an embedding."""
    profile = Profile.objects.get(project=project, external_id=user)
    for kind in ("behavior", "lookalike"):
        segment, _ = Segment.objects.get_or_create(
            project=project, key=f"{kind}-1", defaults={"kind": kind, "name": kind}
        )
        SegmentMembership.objects.create(segment=segment, profile=profile, score=0.9)
    vector = [1.0] + [0.0] * (DIMS - 1)
    ProfileEmbedding.objects.create(
        project=project, profile=profile, embedder_version=1, vector=vector, events=7, updated_at=profile.last_seen
    )
    # What the worker derives from the person's search: its cached text vector and their meaning vector.
    text_vector = [1.0] + [0.0] * (TEXT_DIMS - 1)
    TextEmbedding.objects.create(
        encoder="use-multilingual-v3", digest=text_encoder.text_digest(_query(user)), vector=text_vector,
        created_at=profile.last_seen,
    )  # fmt: skip
    ProfileMeaning.objects.create(
        project=project, profile=profile, encoder="use-multilingual-v3", vector=text_vector, texts=1,
        updated_at=profile.last_seen,
    )  # fmt: skip


def pending_post(client, public_key, user: str, tag: str) -> None:
    """Events accepted but not drained yet: they wait in the Redis stream."""
    late = [event_make(0, event_id=f"{tag}-pending-{i}", user_id=user, anonymous_id=None) for i in range(3)]
    assert events_post(client, public_key, late).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_erase__subject_everywhere__nothing_left_and_others_untouched(client, project, public_key):
    make_experience(project)
    subject_everywhere(client, project, public_key, "alice", "anon-alice", "a")
    subject_everywhere(client, project, public_key, "bob", "anon-bob", "b")
    pending_post(client, public_key, "alice", "a")
    pending_post(client, public_key, "bob", "b")
    dead_letter_make(project, "alice", "anon-alice", "a")
    dead_letter_make(project, "bob", "anon-bob", "b")
    profiling_make(project, "alice")
    profiling_make(project, "bob")
    before = subject_rows(project, "alice", "anon-alice")
    assert all(before.values()), before
    bob_before = subject_rows(project, "bob", "anon-bob")

    request = erasure_request(project, user_id="alice")
    assert request.subject_digest and "alice" not in request.subject_digest
    certificate = privacy_services.subject_erase(request=request)

    assert certificate["complete"] is True
    assert {loc["name"]: loc["remaining"] for loc in certificate["locations"]} == dict.fromkeys(
        [loc.name for loc in registry.locations()], 0
    )
    removed = {loc["name"]: loc["removed"] for loc in certificate["locations"]}
    assert removed["events"] == before["events"] and removed["pending_events"] == 3
    assert removed["exposures"] == 1 and removed["decide_hash"] == 2 and removed["dead_letters"] == 1
    assert removed["segment_memberships"] == 2 and removed["embeddings"] == 1
    assert removed["meaning_vectors"] == 1 and removed["text_vectors"] == 1
    assert subject_rows(project, "alice", "anon-alice") == dict.fromkeys(before, 0)
    assert subject_rows(project, "bob", "anon-bob") == bob_before
    request.refresh_from_db()
    assert request.status == RequestStatus.COMPLETED and request.identifiers == {}
    assert "alice" not in orjson.dumps(request.certificate).decode()
    audit = AuditEntry.objects.filter(object_key=request.reference)
    assert "alice" not in orjson.dumps(list(audit.values("changes", "object_key"))).decode()

    # Afterwards: events for the erased ids are dropped and decide does not profile them again.
    assert events_post(client, public_key, person_events("alice", "anon-alice", 2, "again")).status_code == 200
    _status, answer = post_decide(client, public_key, {"user_id": "alice"})
    assert answer["assignments"]["hero"]["reason"] == "not_personalized"
    drain_all()
    assert subject_rows(project, "alice", "anon-alice") == dict.fromkeys(before, 0)
    # bob's pending events were kept in the stream and are stored now
    assert subject_rows(project, "bob", "anon-bob")["events"] == bob_before["events"] + bob_before["stream"]


@pytest.mark.django_db(transaction=True)
def test_erase__run_twice__same_complete_state(client, project, public_key):
    make_experience(project)
    subject_everywhere(client, project, public_key, "carol", "anon-carol", "c")
    pending_post(client, public_key, "carol", "c")
    request = erasure_request(project, anonymous_id="anon-carol")
    first = privacy_services.subject_erase(request=request)
    second = privacy_services.subject_erase(request=request)
    assert first == second and first["complete"]
    assert sum(subject_rows(project, "carol", "anon-carol").values()) == 0
    assert Suppression.objects.filter(project=project).count() == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_erase__sigkilled_midway_then_rerun__complete(client, project, public_key, tmp_path):
    assert events_post(client, public_key, person_events("dave", "anon-dave", 3, "d")).status_code == 200
    drain_all()
    profile = Profile.objects.get(project=project, external_id="dave")
    start = datetime.now(UTC) - timedelta(days=1)
    rows_copy(
        Event,
        (
            Event(
                project=project,
                profile=profile,
                event_id=f"bulk-{i}",
                type="page_view",
                ts=start + timedelta(seconds=i),
                properties={"url": f"/x/{i}"},
                received_at=start,
            )
            for i in range(6_000)
        ),
    )
    total = Event.objects.filter(profile=profile).count()
    request = erasure_request(project, user_id="dave")
    log = tmp_path / "erase.log"
    with log.open("wb") as out:
        job = subprocess.Popen(
            [sys.executable, "manage.py", "privacy_run", str(request.pk), "--chunk", "100"],
            cwd=ROOT,
            env=drain_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Killed once three chunks are gone, with some sixty to go: midway for sure.
        deadline = time.monotonic() + 120
        while Event.objects.filter(profile=profile).count() > total - 300:
            assert job.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the erasure deleted nothing in time; sessions: {sessions_waiting()}"
            time.sleep(0.01)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        process_kill(job)
    left = Event.objects.filter(profile=profile).count()
    assert 0 < left < total, "killed midway: some events deleted, some left"
    request.refresh_from_db()
    assert request.status == RequestStatus.PROCESSING

    privacy_services.dsr_run(request_id=request.pk)

    request.refresh_from_db()
    assert request.status == RequestStatus.COMPLETED and request.certificate["complete"]
    assert sum(subject_rows(project, "dave", "anon-dave").values()) == 0
    events_removed = next(loc["removed"] for loc in request.certificate["locations"] if loc["name"] == "events")
    assert events_removed == left


@pytest.mark.django_db
def test_erase__unknown_subject__completes_with_nothing_removed(project):
    request = erasure_request(project, email="nobody@example.com")
    certificate = privacy_services.subject_erase(request=request)
    assert certificate["complete"] and all(loc["removed"] == 0 for loc in certificate["locations"])


@pytest.mark.django_db(transaction=True)
def test_merge__anonymous_profile_logs_in__registry_moves_every_row(client, project, public_key):
    """Profile merge walks the registry's merge handlers: nothing is left on the anonymous profile."""
    first = [event_make(i, event_id=f"m-{i}", anonymous_id="anon-m") for i in range(3)]
    events_post(client, public_key, [*first, event_make(9, event_id="u-1", user_id="merle", anonymous_id="anon-u")])
    drain_all()
    identify = event_make(10, event_id="m-id", type="identify", user_id="merle", anonymous_id="anon-m")
    events_post(client, public_key, [identify])
    drain_all()
    merle = Profile.objects.get(project=project, external_id="merle")
    assert Profile.objects.filter(project=project).count() == 1
    assert Event.objects.filter(profile=merle).count() == 5
    assert set(ProfileIdentity.objects.filter(profile=merle).values_list("value", flat=True)) == {
        "merle",
        "anon-m",
        "anon-u",
    }


def sessions_waiting() -> list[tuple]:
    """The test database's sessions that wait, with who blocks them: what a stuck job was waiting for."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name, state, wait_event_type, wait_event, pg_blocking_pids(pid), left(query, 120)"
            " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND state <> 'idle'"
        )
        return cursor.fetchall()
