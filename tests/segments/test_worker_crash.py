"""Every segments job SIGKILLed mid-job: nothing half-written is visible, and the job completes on retry.

The kill lands where it hurts, for sure: the test holds a lock the job needs at that point (a table
lock, or one row's), waits until the worker's query is blocked on it, and kills the worker's whole
process group. Two points per job where it matters: inside the job's write transaction (it must roll
back, leaving the old embedder / memberships / no lookalike in force) and after the commit, in the
middle of publishing segment keys to decide (the outbox row left behind is finished by the reaper).
Jobs run on a real Celery worker (tests/workers.py) with a 1 s visibility timeout, so the message of
the killed worker is redelivered to the next one; the lookalike build, which runs in the web request,
runs in a killed subprocess and is retried as a marketer would, by building again.
"""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
import redis
from django.conf import settings
from django.utils import timezone

from personalization import redis_client, rkeys
from personalization import services as personalization_services
from personalization.models import Profile, ProfileIdentity, Project
from segments import services
from segments.models import (
    ClusteringRun,
    EmbedderVersion,
    MembershipPublish,
    ProfileEmbedding,
    ProfileIntent,
    ProfileScore,
    RunStatus,
    ScoreRun,
    Segment,
    SegmentMembership,
)
from segments.services.embeddings import embedder_latest
from segments.services.lookalikes import Seed
from segments.tasks import clustering_run_task, embeddings_refit_nightly_task, rule_segments_refresh_task
from tests.seeded import demo_seed_cached, state_cached
from tests.segments.conftest import DEMO_END, FLOW_PROFILES, yoga_events_ingest
from tests.workers import DbLock, celery_worker, database_url, subprocess_app_name, until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Short enough to cost the tests nothing, and safe with the solo pool: kombu's Redis transport hands back a
# message unacknowledged for longer than this only when a worker scans (at its start, then on a 10 s timer
# of its event loop), a solo worker runs its task inside that loop so it never scans while a task runs, and
# with a prefetch of one and late acks the running task's message is the only one it holds (acknowledged
# before the loop resumes). So a slow task is never handed out twice; only a dead worker's message is.
VISIBILITY_SECONDS = 1
WORKER_ENV = {"KAIROS_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS)}
LATER = timedelta(minutes=5)  # the reaper's view of "a publish nobody is finishing any more"
# Each job runs twice (killed, then redelivered), so the demo's size is paid twice: see FLOW_PROFILES.
PROFILES = FLOW_PROFILES
LOOKALIKE_SIZE = 150


@pytest.fixture
def demo(tmp_path):
    return demo_seed_cached(profiles=PROFILES, days=14, seed=11, keys_path=tmp_path / "k.json", end=DEMO_END)


@pytest.fixture
def demo_for_scores(tmp_path):
    """The 1,500-person demo: a score is kept only when its model is promoted, on bootstrap intervals seeded
    by the run's id; at 400 people likely-to-buy's lower bound sits near random, so whether anyone is scored
    at all would depend on the id the run happens to get."""
    return demo_seed_cached(profiles=1500, days=14, seed=11, keys_path=tmp_path / "k.json", end=DEMO_END)


@pytest.fixture
def clustered(tmp_path):
    def build() -> tuple[int, int]:
        demo = demo_seed_cached(profiles=PROFILES, days=14, seed=11, keys_path=tmp_path / "k.json", end=DEMO_END)
        services.embeddings_refit(project_id=demo.pk, now=DEMO_END)
        run = services.clustering_run_execute(run_id=services.clustering_run_request(project=demo, k=8).pk)
        assert run.status == RunStatus.DONE
        return demo.pk, run.pk

    def reload(pks: tuple[int, int]):
        return Project.objects.get(pk=pks[0]), ClusteringRun.objects.get(pk=pks[1])

    return state_cached(("clustered", PROFILES, 14, 11, DEMO_END, 8), build, reload)


def _segs(project, profile_id) -> set[str]:
    """The segment keys decide reads for every id of the profile (they must agree)."""
    units = ProfileIdentity.objects.filter(profile_id=profile_id).values_list("value", flat=True)
    fields = {redis_client.worker().hget(rkeys.unit(project.pk, unit), "segs") for unit in units}
    assert len(fields) == 1, f"the ids of profile {profile_id} disagree: {fields}"
    raw = fields.pop()
    return set(raw.decode().split()) if raw else set()


def _members(segment) -> set[int]:
    return set(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))


def _kill_at(lock: DbLock, start, log_path) -> None:
    """Start a worker, queue the job (start()), and SIGKILL the worker once the job waits on `lock`."""
    blocked: list[int] = []
    try:
        with celery_worker(log_path, env=WORKER_ENV) as worker:
            start()
            blocked = until(lock.blocked_backends, "the job to reach the locked query", log_path)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    finally:
        lock.release(orphans=blocked)
    _until_visible(log_path)


def _until_visible(log_path) -> None:
    """Until no unacknowledged message is younger than the visibility timeout: the scan the next worker
    makes as it starts finds the dead worker's message (kombu scores each by when it was delivered)."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    until(
        lambda: broker.zcount("unacked_index", time.time() - VISIBILITY_SECONDS, "+inf") == 0,
        "the killed worker's message to pass the visibility timeout",
        log_path,
    )


def test_refit__worker_killed_mid_write__old_embedder_in_force_and_retry_refits(clustered, tmp_path):
    project, run = clustered
    old = embedder_latest(project_id=project.pk)
    before = dict(ProfileEmbedding.objects.filter(project=project).values_list("profile_id", "vector"))
    log_path = tmp_path / "worker.log"

    # The refit has fitted and inserted its new version, and waits to replace the vectors.
    _kill_at(DbLock.table("segments_profileembedding"), embeddings_refit_nightly_task.delay, log_path)
    assert embedder_latest(project_id=project.pk).pk == old.pk
    after = dict(ProfileEmbedding.objects.filter(project=project).values_list("profile_id", "vector"))
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[pid], before[pid]) for pid in before)
    assert set(ProfileEmbedding.objects.filter(project=project).values_list("embedder_version", flat=True)) == {
        old.version
    }

    with celery_worker(log_path, env=WORKER_ENV):
        new = until(
            lambda: EmbedderVersion.objects.filter(project=project, version=old.version + 1).first(),
            "the redelivered refit",
            log_path,
        )
    rows = ProfileEmbedding.objects.filter(project=project)
    assert rows.count() == new.profiles and set(rows.values_list("embedder_version", flat=True)) == {new.version}
    # The run keeps its own basis: fold-in still places people with the embedder it was clustered on.
    assert ClusteringRun.objects.get(pk=run.pk).embedder_version == old.version


def test_fold_in__worker_killed_mid_write__old_vector_and_segment_then_retry_moves_the_person(clustered, tmp_path):
    project, run = clustered
    walking = next(s for s in Segment.objects.filter(run=run) if "walking" in s.name.lower())
    yoga = next(s for s in Segment.objects.filter(run=run) if "yoga" in s.name.lower())
    profile_id = min(_members(walking))
    vector = ProfileEmbedding.objects.get(profile_id=profile_id).vector
    assert _segs(project, profile_id) == {walking.key}
    yoga_events_ingest(project, profile_id)
    log_path = tmp_path / "worker.log"

    # The drain queues the fold-in; it has rewritten the vector and waits to move the membership.
    _kill_at(DbLock.table("segments_segmentmembership"), personalization_services.events_drain, log_path)
    assert np.array_equal(ProfileEmbedding.objects.get(profile_id=profile_id).vector, vector)
    assert profile_id in _members(walking) and profile_id not in _members(yoga)
    assert _segs(project, profile_id) == {walking.key}

    with celery_worker(log_path, env=WORKER_ENV):
        until(lambda: _segs(project, profile_id) == {yoga.key}, "the redelivered fold-in", log_path)
        until(lambda: not MembershipPublish.objects.exists(), "the publish to finish", log_path)
    assert profile_id in _members(yoga) and profile_id not in _members(walking)
    assert not np.array_equal(ProfileEmbedding.objects.get(profile_id=profile_id).vector, vector)


def test_rule_refresh__killed_mid_write_then_mid_publish__never_half_and_decide_catches_up(demo, tmp_path):
    segment = services.rule_segment_save(
        project=demo, key="plus-plan", name="Plus", definition={"attributes": [{"attribute": "plan", "value": "plus"}]}
    )
    old = _members(segment)
    assert len(old) > 20
    joiners = list(Profile.objects.filter(project=demo).exclude(pk__in=old).order_by("pk").values_list("pk", flat=True))
    joiners = joiners[:100]
    for profile in Profile.objects.filter(pk__in=joiners):
        profile.attributes = {**(profile.attributes or {}), "plan": "plus"}
        profile.save(update_fields=["attributes"])
    log_path = tmp_path / "worker.log"

    # 1. Inside the refresh's transaction: memberships replaced, the segment's size not yet.
    lock = DbLock.row("segments_segment", segment.pk, query_like='UPDATE "segments_segment"%')
    _kill_at(lock, rule_segments_refresh_task.delay, log_path)
    assert _members(segment) == old and Segment.objects.get(pk=segment.pk).size == len(old)
    assert not any("plus-plan" in _segs(demo, pid) for pid in joiners[:20])

    # 2. The redelivered refresh commits, then its worker dies publishing to decide.
    _kill_at(DbLock.table("personalization_profileidentity"), lambda: None, log_path)
    assert _members(segment) == old | set(joiners) and Segment.objects.get(pk=segment.pk).size == len(old) + 100
    (outbox,) = MembershipPublish.objects.all()
    assert set(outbox.profile_ids) == set(joiners) and outbox.done == 0
    assert not any("plus-plan" in _segs(demo, pid) for pid in joiners[:20])

    # 3. The reaper (beat, every 30 s, on any worker) finishes the publish.
    assert services.memberships_publish_resume(now=timezone.now() + LATER) == 1
    assert not MembershipPublish.objects.exists()
    assert all(_segs(demo, pid) == {"plus-plan"} for pid in joiners)
    assert all(_segs(demo, pid) == {"plus-plan"} for pid in sorted(old))


def _build_in_subprocess(project, seed_ids: list[int], key: str, log_path) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url()}
    env["PGAPPNAME"] = subprocess_app_name("job")
    env.update(REDIS_URL=settings.REDIS_URL)
    code = (
        "import django; django.setup()\n"
        "from personalization.models import Project\n"
        "from segments import services\n"
        "from segments.services.lookalikes import Seed\n"
        f"services.lookalike_build(project=Project.objects.get(pk={project.pk}),"
        f" seed=Seed(dict.fromkeys({seed_ids!r}, 1.0), {{}}), size={LOOKALIKE_SIZE}, name='Crash', key={key!r})\n"
    )
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def test_lookalike_build__killed_mid_write_then_mid_publish__no_half_lookalike(clustered, tmp_path):
    project, run = clustered
    trail = next(s for s in Segment.objects.filter(run=run) if "trail" in s.name.lower())
    seed_ids = sorted(_members(trail))[:50]
    log_path = tmp_path / "build.log"

    for lock_table, committed in (("segments_segmentmembership", False), ("personalization_profileidentity", True)):
        lock = DbLock.table(lock_table)
        build = _build_in_subprocess(project, seed_ids, key=f"ll-{lock_table[:8]}", log_path=log_path)
        blocked = until(lock.blocked_backends, f"the build to wait on {lock_table}", log_path)
        build.send_signal(signal.SIGKILL)
        build.wait()
        lock.release(orphans=blocked)
        segment = Segment.objects.filter(key=f"ll-{lock_table[:8]}").first()
        if not committed:
            # Killed inside its transaction: no segment, no member, nothing a marketer could target.
            assert segment is None and not SegmentMembership.objects.filter(segment__kind="lookalike").exists()
            continue
        # Killed publishing: the lookalike is whole in PostgreSQL, and the reaper gives decide all of it.
        members = _members(segment)
        assert len(members) == segment.size == LOOKALIKE_SIZE and not members & set(seed_ids)
        assert services.memberships_publish_resume(now=timezone.now() + LATER) == 1
        assert all(segment.key in _segs(project, pid) for pid in members)

    # The retry a marketer makes after the first crash: building again under the same key works.
    seed = Seed(dict.fromkeys(seed_ids, 1.0), {})
    again = services.lookalike_build(project=project, seed=seed, size=LOOKALIKE_SIZE, name="Again", key="ll-segments")
    assert again.size == LOOKALIKE_SIZE and len(_members(again)) == LOOKALIKE_SIZE


def test_clustering__worker_killed_mid_publish__run_whole_and_decide_catches_up(demo, tmp_path):
    services.embeddings_refit(project_id=demo.pk, now=DEMO_END)
    log_path = tmp_path / "worker.log"
    holder = {}

    def start():
        holder["run"] = services.clustering_run_request(project=demo, k=8)  # queues clustering_run_task

    _kill_at(DbLock.table("personalization_profileidentity"), start, log_path)
    run = ClusteringRun.objects.get(pk=holder["run"].pk)
    assert run.status == RunStatus.DONE and Segment.objects.filter(run=run).count() == 8
    assert SegmentMembership.objects.filter(segment__run=run).count() == run.profiles
    assert MembershipPublish.objects.count() == 1
    labels = dict(SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", "segment__key"))
    sample = sorted(labels)[:: max(1, len(labels) // 200)]
    assert all(_segs(demo, pid) == set() for pid in sample)  # nothing published yet: no half state

    # A redelivered task for a finished run does nothing; the reaper finishes the publish.
    assert clustering_run_task.apply(args=[run.pk]).get() == RunStatus.DONE
    assert services.memberships_publish_resume(now=timezone.now() + LATER) == 1
    assert all(_segs(demo, pid) == {labels[pid]} for pid in sample)


def test_score_run__worker_killed_mid_write__no_half_scores_and_the_redelivered_retrain_finishes(
    demo_for_scores, tmp_path
):
    demo = demo_for_scores
    log_path = tmp_path / "worker.log"
    holder = {}

    def start():
        holder["run"] = services.score_run_request(project=demo)  # queues score_run_task

    _kill_at(DbLock.table(ProfileScore._meta.db_table), start, log_path)
    run = ScoreRun.objects.get(pk=holder["run"].pk)
    assert run.status == RunStatus.RUNNING, run.status
    assert not ProfileScore.objects.filter(project=demo).exists(), "killed inside the write: nothing half written"

    with celery_worker(log_path, env=WORKER_ENV):
        run = until(
            lambda: (r := ScoreRun.objects.get(pk=run.pk)).status == RunStatus.DONE and r,
            "the redelivered retrain to finish",
            log_path,
            timeout=300,
        )
    rows = ProfileScore.objects.filter(project=demo)
    assert rows.count() == run.scored > 500
    assert set(rows.values_list("run_id", flat=True)) == {run.pk}


def test_intents_rescore__worker_killed_mid_write__no_half_chunk_and_the_redelivered_task_writes_them_all(
    demo, tmp_path
):
    log_path = tmp_path / "worker.log"
    trail = {"name": "trail running", "examples": ["grippy shoes for muddy paths", "trail shoes", "running vest"]}

    def start():
        services.intent_create(project_id=demo.pk, **trail)  # queues intents_rescore_task

    _kill_at(DbLock.table(ProfileIntent._meta.db_table), start, log_path)
    assert not ProfileIntent.objects.filter(project=demo).exists(), "killed inside a chunk's write: none of it kept"

    with celery_worker(log_path, env=WORKER_ENV):
        until(lambda: ProfileIntent.objects.filter(project=demo).exists(), "the redelivered rescore", log_path)

    # Leaving the block stops the worker warmly: the task it runs finishes first. What it wrote is what a
    # rescore in one go writes.
    def written():
        return set(ProfileIntent.objects.filter(project=demo).values_list("profile_id", "intent__key", "score"))

    after_crash = written()
    services.intents_rescore(project_id=demo.pk)
    assert len(after_crash) > 100 and after_crash == written()
