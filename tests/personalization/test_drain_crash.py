"""Acceptance: killing the drain worker (SIGKILL) mid-batch and restarting it ends with every accepted
event stored exactly once. Plus the two crash points made deterministic: after reading entries
(before writing) and after committing them (before acknowledging).

The subprocess tests commit for real (transaction=True) so that `manage.py events_drain`, started
against the test database and the test Redis, sees what the test accepted.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.test import Client

from personalization import redis_client, rkeys, services
from personalization.ingest import drain as events_service
from personalization.models import Event, Profile
from tests.factories import event_make, events_post
from tests.workers import DbLock, subprocess_app_name

ROOT = Path(__file__).resolve().parents[2]
# Generous: the machine may be small and busy. No assertion depends on how fast anything is.
START_SECONDS = 180
FINISH_SECONDS = 600
# A dead drain's entries are claimed once idle this long; short, so the test waits little for it.
CLAIM_IDLE_MS = 200


def post_batches(client: Client, key: str, *, batches: int, size: int, people: int, tag: str) -> set[str]:
    """Send batches through the real endpoint; returns the event ids it accepted."""
    accepted: set[str] = set()
    for b in range(batches):
        events = [
            event_make(b * size + i, event_id=f"{tag}-{b}-{i}", anonymous_id=f"anon-{(b * size + i) % people}")
            for i in range(size)
        ]
        response = events_post(client, key, events)
        assert response.status_code == 200, response.content
        assert response.json()["accepted"] == size
        accepted.update(e["event_id"] for e in events)
    return accepted


def stored(project) -> tuple[int, int]:
    """(rows, distinct event ids) stored for the project."""
    counts = Event.objects.filter(project=project).aggregate(rows=Count("id"), ids=Count("event_id", distinct=True))
    return counts["rows"], counts["ids"]


def pending_count() -> int:
    return redis_client.worker().xpending(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP)["pending"]


def pending_consumers() -> list[str]:
    """The consumers holding entries read and not yet acknowledged."""
    summary = redis_client.worker().xpending(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP)
    return [c["name"] for c in summary["consumers"] if c["pending"]]


def pending_idle_at_least(ms: int) -> bool:
    """Every entry read and not acknowledged has been idle `ms` or longer (so a drain may claim it)."""
    entries = redis_client.worker().xpending_range(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP, "-", "+", 100)
    return all(e["time_since_delivered"] >= ms for e in entries)


def stream_length() -> int:
    return redis_client.worker().xlen(rkeys.EVENTS_STREAM)


def drain_all(**kwargs) -> int:
    total = 0
    while moved := services.events_drain(**kwargs):
        total += moved
    return total


def drain_env() -> dict[str, str]:
    """Environment for `manage.py events_drain` on the test database and the test Redis database."""
    db = connection.settings_dict
    credentials = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{credentials}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "KAIROS_TEST_REDIS_URL": settings.REDIS_URL,
        "KAIROS_LOG_LEVEL": "WARNING",
        "PGAPPNAME": subprocess_app_name("job"),
    }


def drain_start(log: Path, *args: str) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "events_drain", *args],
            cwd=ROOT,
            env=drain_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def process_kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_drain__sigkilled_mid_batch_then_restarted__every_event_stored_once(project, public_key, tmp_path):
    # Ten entries of 500 events: the drain takes one per step (--entries 1), so the kill, sent as
    # soon as the first step is committed, lands with most of the stream still to go.
    batches, size, people = 10, 500, 1000
    accepted = post_batches(Client(), public_key, batches=batches, size=size, people=people, tag="k")
    total = len(accepted)
    assert total == batches * size and stream_length() == batches

    drain = None
    try:
        drain = drain_start(tmp_path / "drain-1.log", "--entries", "1", "--claim-idle-ms", str(CLAIM_IDLE_MS))
        deadline = time.monotonic() + START_SECONDS
        while stored(project)[0] == 0:
            assert drain.poll() is None, f"the drain exited early:\n{(tmp_path / 'drain-1.log').read_text()}"
            assert time.monotonic() < deadline, "the drain stored nothing in time"
            time.sleep(0.01)
        drain.send_signal(signal.SIGKILL)
        drain.wait(timeout=30)
    finally:
        process_kill(drain)

    rows_at_kill, _ = stored(project)
    assert 0 < rows_at_kill < total, "the kill must land mid-stream"
    left, pending = stream_length(), pending_count()
    # The entry of the step being written, and the next one, read while it was written.
    assert pending <= 2, "a drain holds at most the entry it is working on and the one it read ahead"
    # Entries are acknowledged only after their events are committed: every entry gone from the
    # stream has all its events stored.
    assert rows_at_kill >= (batches - left) * size

    # The dead consumer's entries can be claimed once idle for --claim-idle-ms: wait for that, in Redis.
    deadline = time.monotonic() + START_SECONDS
    while not pending_idle_at_least(CLAIM_IDLE_MS):
        assert time.monotonic() < deadline, "the dead drain's entries never went idle"
        time.sleep(0.05)
    restart = None
    try:
        restart = drain_start(tmp_path / "drain-2.log", "--once", "--claim-idle-ms", str(CLAIM_IDLE_MS))
        code = restart.wait(timeout=FINISH_SECONDS)
    finally:
        process_kill(restart)
    assert code == 0, (tmp_path / "drain-2.log").read_text()

    assert stored(project) == (total, total)
    assert set(Event.objects.filter(project=project).values_list("event_id", flat=True)) == accepted
    assert Profile.objects.filter(project=project).count() == people, "re-drained events create no new profiles"
    assert stream_length() == 0 and pending_count() == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_drain__two_drains_side_by_side__every_event_stored_once(project, public_key, tmp_path):
    # Batches share people (each person is in three batches) and log some of them in, so both drains
    # create and stitch the same profiles at the same time.
    client, accepted, identified = Client(), set(), set()
    batches, size, people = 12, 100, 400
    for b in range(batches):
        members = [(b * size + i) % people for i in range(size)]
        events = [
            event_make(b * size + i, event_id=f"p-{b}-{i}", anonymous_id=f"anon-{n}") for i, n in enumerate(members)
        ]
        events += [
            {"event_id": f"id-{b}-{n}", "type": "identify", "anonymous_id": f"anon-{n}", "user_id": f"user-{n}"}
            for n in members[::25]
        ]
        response = events_post(client, public_key, events)
        assert response.json()["accepted"] == len(events)
        accepted.update(e["event_id"] for e in events)
        identified.update(members[::25])

    # Side by side for sure, whatever the machine's speed: the events table is locked until both drains
    # hold entries of their own (a drain reads its entries before it writes, and claims no other's
    # with --claim-idle-ms 60000), so each has events to store while the other runs.
    services.stream_ensure_group(redis_client.worker())  # so the test can watch the group from the start
    drains, lock = [], DbLock.table("personalization_event")
    try:
        for n in range(2):
            log = tmp_path / f"drain-{n}.log"
            drains.append(drain_start(log, "--once", "--entries", "2", "--claim-idle-ms", "60000"))
        deadline = time.monotonic() + START_SECONDS
        while len(pending_consumers()) < 2:
            assert all(drain.poll() is None for drain in drains), "a drain exited before reading"
            assert time.monotonic() < deadline, "the two drains did not both read entries in time"
            time.sleep(0.05)
        lock.release(orphans=[])
        codes = [drain.wait(timeout=FINISH_SECONDS) for drain in drains]
    finally:
        if not lock.conn.closed:  # a failed wait above: let the drains go before stopping them
            lock.release(orphans=[])
        for drain in drains:
            process_kill(drain)
    logs = [(tmp_path / f"drain-{n}.log").read_text() for n in range(2)]
    assert codes == [0, 0], "\n".join(logs)
    # Each drain says how many events it moved: both moved some, so they did overlap.
    moved = [int(re.search(r"drained (\d+) events", log).group(1)) for log in logs]
    assert all(m > 0 for m in moved) and sum(moved) == len(accepted), logs

    assert stored(project) == (len(accepted), len(accepted))
    assert Profile.objects.filter(project=project).count() == people
    assert Profile.objects.filter(project=project, external_id__isnull=False).count() == len(identified)
    assert stream_length() == 0 and pending_count() == 0


@pytest.mark.django_db
def test_drain__consumer_died_after_reading__entries_claimed_once_idle(client, project, public_key):
    accepted = post_batches(client, public_key, batches=5, size=100, people=40, tag="r")
    redis = redis_client.worker()
    services.stream_ensure_group(redis)
    # A consumer reads three entries and dies before writing them: they stay pending under its name.
    taken = redis.xreadgroup(rkeys.EVENTS_GROUP, "dead-consumer", {rkeys.EVENTS_STREAM: ">"}, count=3)
    assert len(taken[0][1]) == 3 and pending_count() == 3

    # Not idle long enough yet: only the two entries nobody has read are drained.
    assert drain_all(claim_idle_ms=60_000) == 200
    assert pending_count() == 3

    assert drain_all(claim_idle_ms=0) == 300
    assert stored(project) == (500, 500)
    assert set(Event.objects.filter(project=project).values_list("event_id", flat=True)) == accepted
    assert Profile.objects.filter(project=project).count() == 40
    assert stream_length() == 0 and pending_count() == 0


class _Crash(Exception):
    """Stands for the process dying at that line."""


@pytest.mark.django_db(transaction=True)
def test_drain__crash_after_commit_before_ack__redrain_stores_once(client, project, public_key, monkeypatch):
    accepted = post_batches(client, public_key, batches=3, size=100, people=20, tag="c")
    identify = {
        "event_id": "id-1",
        "type": "identify",
        "anonymous_id": "anon-3",
        "user_id": "u-3",
        "properties": {"attributes": {"plan": "pro"}},
    }
    events_post(client, public_key, [identify])
    accepted.add("id-1")

    def crash(*args):
        raise _Crash

    monkeypatch.setattr(events_service, "_entries_ack", crash)
    with pytest.raises(_Crash):
        services.events_drain(claim_idle_ms=0)
    assert stored(project) == (301, 301), "the events were committed before the crash"
    assert pending_count() == 4 and stream_length() == 4, "but their entries were never acknowledged"
    profiles_before = list(
        Profile.objects.filter(project=project).order_by("pk").values("pk", "external_id", "attributes")
    )

    monkeypatch.undo()
    assert drain_all(claim_idle_ms=0) == 301  # written again, skipped by the unique key
    assert stored(project) == (301, 301)
    assert set(Event.objects.filter(project=project).values_list("event_id", flat=True)) == accepted
    profiles_after = list(
        Profile.objects.filter(project=project).order_by("pk").values("pk", "external_id", "attributes")
    )
    assert profiles_after == profiles_before
    assert len(profiles_after) == 20
    assert Profile.objects.get(project=project, external_id="u-3").attributes == {"plan": "pro"}
    assert stream_length() == 0 and pending_count() == 0
