"""A Celery worker SIGKILLed in the middle of a bandit update and of a lift report: the task runs again
and completes, and nothing half-written is left behind.

The kill lands mid-task for sure: the test holds an exclusive lock on the exposure table, which both
tasks read after they started (the lift report has already written its first progress then), waits
until the worker's query is blocked on it, and kills. Two paths are covered: a whole worker killed
(its message waits in Redis for the visibility timeout, then another worker takes it) and only the
pool process running the task killed (reject_on_worker_lost puts it straight back).
"""

import json
import os
import signal
from datetime import timedelta

import psutil
import pytest
from django.db import connection
from django.utils import timezone

from experiments.models import LiftReport, Metric, ReportStatus
from experiments.tasks import lift_report_task
from personalization import redis_client, rkeys, services
from personalization.ingest import partitions
from personalization.models import ApiKey, BanditWeights, Exposure, Profile
from personalization.tasks import api_keys_publish_task, bandits_update_task, partitions_ensure_task
from personalization.workspace import auth
from tests.experiments.test_lift_report import _population, hero_report_done
from tests.experiments.test_metric_report import _world
from tests.experiments.test_metric_values import _assert_kept_equal_the_scan, _metrics
from tests.factories import key_make
from tests.personalization.test_experience_views import experience_make
from tests.workers import DbLock, broker_settled, celery_worker, unacked_visible_again, until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A whole worker killed leaves its message unacknowledged; the next worker hands it out again once it
# has been so for this long. 1 s is safe here: only one worker is alive at a time, a solo pool runs its
# task inside the event loop (so the worker cannot scan, and requeue, its own running task's message)
# and acknowledges it right after, and with prefetch 1 it holds no second message that could go stale.
VISIBILITY_SECONDS = 1


def _rounded(value):
    """`value` with every float rounded to 9 significant digits, at any depth."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _bandit_running(project):
    experience = experience_make(project, key="hero", policy="segment_bandit", segment_attribute="plan", start=True)
    now = timezone.now()
    profiles = Profile.objects.bulk_create(Profile(project=project, first_seen=now, last_seen=now) for _ in range(600))
    Exposure.objects.bulk_create(
        Exposure(
            project=project,
            profile=profile,
            experience_key="hero",
            variant_key="b" if i % 2 else "control",
            arm="variant",
            segment="gold" if i % 3 else "free",
            exposed_at=now - timedelta(minutes=i % 50),
            converted=(i % 7 == 0) if i % 2 else (i % 11 == 0),
        )
        for i, profile in enumerate(profiles)
    )
    return experience


def test_bandit_update__worker_sigkilled_mid_task__another_worker_completes_it_whole(project, tmp_path):
    experience = _bandit_running(project)
    log_path = tmp_path / "worker.log"
    env = {"KAIROS_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS)}
    lock = DbLock.table("personalization_exposure")
    with celery_worker(log_path, env=env) as first:
        bandits_update_task.delay()
        blocked = until(lock.blocked_backends, "the bandit update to read exposures", log_path)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not BanditWeights.objects.filter(experience=experience).exists()  # killed before any write
    lock.release(orphans=blocked)
    # Past the visibility timeout before the next worker starts: its first scan then finds the message.
    until(lambda: unacked_visible_again(VISIBILITY_SECONDS), "the killed update's message to be due again")

    with celery_worker(log_path, env=env):
        until(lambda: BanditWeights.objects.filter(experience=experience).exists(), "the redelivered update", log_path)
        # Once no message is queued or unacknowledged, a second, duplicate run would have written.
        until(broker_settled, "the worker to finish every task", log_path)
        rows = list(BanditWeights.objects.filter(experience=experience))

    # One whole update: the global bandit and both segments, written together, once.
    assert sorted(r.segment for r in rows) == ["", "free", "gold"]
    assert len({r.computed_at for r in rows}) == 1
    for row in rows:
        assert set(row.weights) == {"control", "b"} and sum(row.weights.values()) == pytest.approx(1, abs=1e-5)
    snapshot = json.loads(redis_client.worker().get(rkeys.snapshot(project.pk)))
    served = snapshot["experiences"]["hero"]["weights"]
    assert served == {row.segment: [row.weights["control"], row.weights["b"]] for row in rows}


def test_lift_report__pool_process_sigkilled_mid_report__heartbeat_goes_on__retried_and_done_whole(project, tmp_path):
    _population(project, n=400)  # enough for a report of both segments; the point is the kill
    end = timezone.now() + timedelta(days=1)
    report = LiftReport.objects.create(
        project=project, experience_key="hero", segment_by="attribute:intent", start=end - timedelta(days=30), end=end
    )
    log_path = tmp_path / "worker.log"
    lock = DbLock.table("personalization_exposure")
    with celery_worker(log_path, pool="prefork", env={"KAIROS_HEARTBEAT_MS": "200"}) as worker:
        lift_report_task.delay(report.pk)
        blocked = until(lock.blocked_backends, "the report to read exposures", log_path)
        report.refresh_from_db()
        assert report.status == ReportStatus.RUNNING and report.result is None  # mid-report: progress only
        # Its only pool slot is busy, yet the worker's main process keeps writing its heartbeat: a busy
        # worker is not taken for a dead one (config/heartbeat.py).
        redis_client.worker().delete(rkeys.WORKER_HEARTBEAT)
        until(lambda: redis_client.worker().exists(rkeys.WORKER_HEARTBEAT), "the busy worker's heartbeat", log_path)
        (child,) = psutil.Process(worker.pid).children()
        os.kill(child.pid, signal.SIGKILL)
        lock.release(orphans=blocked)

        def done():
            report.refresh_from_db()
            return report.status in (ReportStatus.DONE, ReportStatus.FAILED)

        until(done, "the retried report", log_path)
        assert worker.poll() is None

    assert report.status == ReportStatus.DONE, f"{report.error}\n{log_path.read_text()[-4000:]}"
    assert report.progress == 100
    reference = hero_report_done(project, start=report.start, end=report.end)
    # Equal up to float summation order: PostgreSQL's parallel workers may add in another order.
    assert _rounded(report.result["report"]) == _rounded(reference.result["report"])


def test_metric_values_fill__worker_sigkilled_mid_chunk__nothing_half_kept_and_the_redelivered_jobs_finish(
    project, tmp_path
):
    _world(project, n=90, seed=5)
    last = Exposure.objects.filter(project=project).order_by("-id").values_list("id", flat=True).first()
    lock = DbLock.row("personalization_exposure", last, query_like="UPDATE personalization_exposure%")
    log_path = tmp_path / "worker.log"
    env = {"KAIROS_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS)}
    with celery_worker(log_path, env=env) as first:
        metrics = _metrics(project)  # each one queues its backfill job as it is made
        blocked = until(lock.blocked_backends, "the first backfill to write its chunk", log_path)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    lock.release(orphans=blocked)
    # Killed inside the chunk's transaction: no exposure keeps a value, no metric reads as ready.
    assert not Exposure.objects.filter(project=project, metric_values__isnull=False).exists()
    assert not any(m.spec()["values_ready"] for m in Metric.objects.filter(project=project))
    until(lambda: unacked_visible_again(VISIBILITY_SECONDS), "the killed job's message to be due again")

    with celery_worker(log_path, env=env):
        until(
            lambda: all(m.spec()["values_ready"] for m in Metric.objects.filter(project=project)),
            "every metric's backfill, the killed one's redelivered",
            log_path,
        )
        until(broker_settled, "the worker to finish every task", log_path)
    assert len(metrics) == Metric.objects.filter(project=project, values_progress__isnull=True).count()
    _assert_kept_equal_the_scan(project, "hero")


def test_api_keys_publish__worker_sigkilled_mid_task__redelivered_run_publishes_every_key(project, tmp_path):
    """Redis lost one key and kept one deleted since: a killed run writes nothing, the redelivered
    run publishes every key as PostgreSQL has it (revoked ones as revoked) and drops the unknown one."""
    active = [key_make(project=project, kind="public") for _ in range(3)]
    revoked = ApiKey.objects.get(key_hash=auth.key_hash(key_make(project=project, kind="public")))
    services.api_key_revoke(key=revoked)
    client = redis_client.worker()
    lost = auth.key_hash(active[0])
    client.hdel(rkeys.PUBLIC_KEYS, lost)
    client.hset(rkeys.PUBLIC_KEYS, "f" * 64, "999:999")  # a key deleted while Redis was away
    before = client.hgetall(rkeys.PUBLIC_KEYS)
    log_path = tmp_path / "worker.log"
    env = {"KAIROS_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS)}
    lock = DbLock.table("personalization_apikey")
    with celery_worker(log_path, env=env) as first:
        api_keys_publish_task.delay()
        blocked = until(lock.blocked_backends, "the publish to read the keys", log_path)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert client.hgetall(rkeys.PUBLIC_KEYS) == before  # killed before any write
    lock.release(orphans=blocked)
    # Past the visibility timeout before the next worker starts: its first scan then finds the message.
    until(lambda: unacked_visible_again(VISIBILITY_SECONDS), "the killed publish's message to be due again")

    with celery_worker(log_path, env=env):
        until(lambda: client.hexists(rkeys.PUBLIC_KEYS, lost), "the redelivered publish", log_path)

    published = {k.decode(): v.decode() for k, v in client.hgetall(rkeys.PUBLIC_KEYS).items()}
    keys = ApiKey.objects.filter(project=project, kind="public")
    assert published == {
        k.key_hash: auth.published_key_value(key_id=k.pk, project_id=project.pk, revoked=k.revoked_at is not None)
        for k in keys
    }
    assert published[revoked.key_hash] == "-"


def _partition_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return cursor.fetchone()[0]


def test_partitions_ensure__worker_sigkilled_mid_task__no_month_half_made_and_the_redelivered_run_makes_both(
    tmp_path,
):
    """The events' month is made, then the task waits on the exposures' DEFAULT partition and is killed
    there: neither month exists (one transaction); the redelivered run makes both."""
    month = partitions.month_add(partitions.month_floor(timezone.now()), partitions.MONTHS_AHEAD)
    names = [partitions.partition_name(table, month) for table in partitions.PARTITIONED]
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
    log_path = tmp_path / "worker.log"
    env = {"KAIROS_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS)}
    lock = DbLock.table(partitions.default_name("personalization_exposure"))
    with celery_worker(log_path, env=env) as first:
        partitions_ensure_task.delay()
        blocked = until(lock.blocked_backends, "the task to reach the exposures", log_path)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    lock.release(orphans=blocked)
    assert not any(_partition_exists(name) for name in names)  # the events' month rolled back with it
    until(lambda: unacked_visible_again(VISIBILITY_SECONDS), "the killed task's message to be due again")

    with celery_worker(log_path, env=env):
        until(lambda: all(_partition_exists(name) for name in names), "the redelivered run", log_path)
    assert partitions.partitions_ensure() == []  # whole: a further run has nothing to make
