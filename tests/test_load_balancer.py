"""Two decide and two web processes behind a real HAProxy, run with deploy/haproxy.cfg (the compose
file's load balancer; `make test` installs Debian's haproxy), two event drains, one PostgreSQL and a
real three-node Redis Cluster for Kairos's keys (Celery's broker and the cache on the plain test
Redis, as KAIROS_REDIS_CLUSTER asks): what a visitor and an operator see must not depend on which
replica answers, nor on which node holds a key. The stack starts once for the module; the plain-Redis
path runs in every other test, so these run on the cluster only."""

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import setup_databases, teardown_databases
from redis.cluster import RedisCluster

from bench import _common
from config.heartbeat import heartbeat_write
from personalization import redis_client, rkeys, services
from personalization.decide import runtime
from personalization.models import Event
from tests import factories
from tests.personalization.conftest import _granian_server, free_port, server_env
from tests.redis_cluster import node_of, project_off_the_stream_node

pytestmark = pytest.mark.slow

HAPROXY_CFG = Path(settings.BASE_DIR) / "deploy" / "haproxy.cfg"
EVENTS_PER_KEY = 30  # events requests per key and second, counted in Redis by every decide replica
EDIT_SEEN_WITHIN = 1.0  # seconds from an edit's answer to every decide replica answering with it (issue 21)


def haproxy_config(*, port: int, decide: list[str], web: list[str]) -> str:
    """deploy/haproxy.cfg with the replicas listed instead of found through Docker's DNS, and bound to
    `port`: routing, health checks and headers are the file compose runs."""
    text = HAPROXY_CFG.read_text()
    text = re.sub(r"\nresolvers docker\n(?:    .*\n)+", "\n", text)
    text = text.replace("bind :8000", f"bind 127.0.0.1:{port}")
    for name, urls in (("decide", decide), ("web", web)):
        servers = "\n".join(f"    server {name}{n} {url.removeprefix('http://')}" for n, url in enumerate(urls, 1))
        text, count = re.subn(rf"    server-template {name} .*", servers, text)
        assert count == 1, f"deploy/haproxy.cfg has no server-template line for {name}"
    return text


def replicas_seen(lb: subprocess.Popen, url: str, path: str, want: set[str]) -> None:
    """Ask through the LB until each replica of `want` answered (HAProxy marks them up after a check)."""
    seen, deadline = set(), time.monotonic() + 30
    while seen != want:
        assert lb.poll() is None, "haproxy exited: see lb.log in the test's tmp folder"
        assert time.monotonic() < deadline, f"only {seen} of {want} answered through the load balancer"
        try:
            response = requests.get(url + path, timeout=5)
        except requests.ConnectionError:  # HAProxy is not listening yet
            time.sleep(0.05)
            continue
        seen.add(response.headers.get("X-Kairos-Replica"))
        seen &= want


@contextmanager
def process(command: list[str], env: dict, log: Path):
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stdout=out, stderr=out, start_new_session=True)
        try:
            yield proc
        finally:
            _common.process_stop(proc)


@pytest.fixture(scope="module")
def committed(django_db_setup, django_db_blocker):
    """What the tests write is committed at once, for the replicas to see (as `transaction=True`
    would), and the test database emptied once, after the stack has stopped, rather than after each
    test: a TRUNCATE at a test's end could meet a drain still storing that test's events (a deadlock),
    and takes one to three seconds on this machine. The tests make projects of their own, so what an
    earlier one left does not count in a later one's answers.

    pytest-django sets up only the databases that the session's marked tests use, and these tests
    carry no `django_db` mark: run alone (`pytest tests/test_load_balancer.py`), the module sets up the
    test database itself rather than writing to the development one."""
    with django_db_blocker.unblock(), ExitStack() as own:
        if not connection.settings_dict["NAME"].startswith("test_"):
            made = setup_databases(verbosity=0, interactive=False, aliases={"default"})
            own.callback(teardown_databases, made, verbosity=0)
        yield
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def data_on_cluster(redis_cluster):
    """Kairos's keys on the three-node cluster for the whole module, in this process and in every
    process it starts; the environment those processes get. No `/0` in the URL: clean_redis refuses
    a URL naming the demo's database (a cluster has only database 0)."""
    url = f"redis://127.0.0.1:{redis_cluster[0]}"
    env = {"REDIS_URL": url, "KAIROS_REDIS_CLUSTER": "1", "CELERY_BROKER_URL": settings.CELERY_BROKER_URL}
    runtime.buffer.flush()  # an earlier module's buffered writes go to its Redis
    with override_settings(REDIS_URL=url, KAIROS_REDIS_CLUSTER=True):
        redis_client.reset()
        assert isinstance(redis_client.worker(), RedisCluster)
        yield env
        runtime.buffer.flush()
    redis_client.reset()


@pytest.fixture(scope="module")
def stack(committed, data_on_cluster, tmp_path_factory):
    assert shutil.which("haproxy"), "haproxy is not installed: `make test` installs it (make haproxy)"
    tmp = tmp_path_factory.mktemp("lb")
    decide_env = {"KAIROS_ROLE": "decide", "KAIROS_DECIDE_CPU_PINNING": "0"}
    # One proxy hop (HAProxy) appends to X-Forwarded-For; one low per-key limit to see shared counts.
    shared = {
        **data_on_cluster,
        "KAIROS_TRUSTED_PROXIES": "1",
        "KAIROS_EVENTS_PER_KEY_PER_SECOND": str(EVENTS_PER_KEY),
    }
    with ExitStack() as stack, ThreadPoolExecutor(4) as pool:
        drain = [sys.executable, "manage.py", "events_drain", "--claim-idle-ms", "2000"]
        drain_env = server_env(data_on_cluster)
        drains = [stack.enter_context(process(drain, drain_env, tmp / f"drain{n}.log")) for n in range(2)]
        # The four servers boot side by side (importing Django is most of a boot): each is on the
        # stack, stopped on the way out, as soon as it answers.
        start = contextmanager(_granian_server)
        envs = [{**decide_env, **shared}] * 2 + [shared] * 2
        decide1, decide2, web1, web2 = pool.map(lambda env: stack.enter_context(start(env, 1)), envs)
        decide, web = [decide1, decide2], [web1, web2]
        port = free_port()
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(haproxy_config(port=port, decide=decide, web=web))
        haproxy = stack.enter_context(process(["haproxy", "-db", "-f", str(cfg)], dict(os.environ), tmp / "lb.log"))
        lb = f"http://127.0.0.1:{port}"
        heartbeats_write()  # web's /readyz wants the worker's and beat's heartbeats; this test runs no Celery
        replicas_seen(haproxy, lb, "/api/v1/ping", {"decide1", "decide2"})
        replicas_seen(haproxy, lb, "/readyz", {"web1", "web2"})
        yield {"lb": lb, "decide": decide, "web": web, "drains": drains, "redis": redis_client.worker()}


def heartbeats_write() -> None:
    for key in (rkeys.WORKER_HEARTBEAT, rkeys.BEAT_HEARTBEAT):
        heartbeat_write(key)


@pytest.fixture(autouse=True)
def heartbeat(clean_redis, data_on_cluster):
    """clean_redis empties Redis (here every node of the cluster) before each test: the heartbeat
    goes back at once, so web's /readyz (the LB's health check, every 5 s) keeps both web replicas in
    rotation."""
    heartbeats_write()


def experience_make(project, key: str = "hero"):
    variants = [{"key": f"v{i}", "payload": {"n": i}, "is_control": i == 0} for i in range(3)]
    experience = services.experience_create(
        project=project, key=key, name=key.title(), touchpoint="home", variants=variants, policy="fixed"
    )
    services.experience_start(experience=experience)
    services.snapshot_publish(project_id=project.pk)
    return experience


def decide(url: str, key: str, unit: str, **headers) -> requests.Response:
    response = requests.post(
        f"{url}/api/v1/decide",
        json={"anonymous_id": unit},
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response


def test_same_unit__same_variant_from_every_decide_replica(stack):
    project = project_off_the_stream_node(stack["redis"])  # decide's keys and the events' on two nodes
    key = factories.key_make(project=project)
    experience_make(project)
    variants = {}
    for n in range(20):
        answers: dict[str, dict] = {}
        for _ in range(2):  # round robin: the second request goes to the other replica
            response = decide(stack["lb"], key, f"visitor-{n}")
            answers[response.headers["X-Kairos-Replica"]] = response.json()["assignments"]["hero"]
        assert set(answers) == {"decide1", "decide2"}
        first, second = answers.values()
        assert first["variant"] == second["variant"] and first["variant"] in {"v0", "v1", "v2"}
        assert first["payload"] == second["payload"]
        variants[f"visitor-{n}"] = first
    # The replicas wrote the sticky assignments to the node that holds the project's slot.
    assert node_of(stack["redis"], rkeys.unit(project.pk, "visitor-0")) != node_of(stack["redis"], rkeys.EVENTS_STREAM)

    def stored() -> dict:
        return {unit: stack["redis"].hget(rkeys.unit(project.pk, unit), "a:hero") for unit in variants}

    deadline = time.monotonic() + 10
    while None in stored().values():
        assert time.monotonic() < deadline, stored()
        time.sleep(0.05)
    # A held-out unit keeps a holdout mark, not the control's key it is shown.
    split = {unit: a["variant"].encode() for unit, a in variants.items() if not a["reason"].startswith("holdout")}
    assert split and {unit: stored()[unit] for unit in split} == split, (stored(), variants)


def test_events_limit__counted_once_for_all_replicas(stack):
    project = factories.project_make(name="Limited")
    key = factories.key_make(project=project)

    def send(n: int) -> tuple[int, str]:
        response = requests.post(
            f"{stack['lb']}/api/v1/events",
            json={"events": [factories.event_make(n)]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        return response.status_code, response.headers.get("X-Kairos-Replica")

    started = time.time()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8 * EVENTS_PER_KEY)))
    windows = int(time.time()) - int(started) + 1
    accepted = [replica for status, replica in answers if status == 200]
    limited = [replica for status, replica in answers if status == 429]
    assert len(accepted) + len(limited) == len(answers)
    # Counted per process, two replicas would let up to twice the limit through in each second.
    assert len(accepted) <= EVENTS_PER_KEY * windows, (len(accepted), windows)
    assert set(accepted) == set(limited) == {"decide1", "decide2"}


def test_experience_edit__seen_by_every_decide_replica(stack):
    project = factories.project_make(name="Edited")
    key, secret = factories.key_make(project=project), factories.key_make(project=project, kind="secret")
    experience_make(project)
    before = decide(stack["lb"], key, "visitor-1").json()["assignments"]["hero"]["version"]
    # The edit goes through the load balancer to a web replica, as from the dashboard or the REST API.
    edit = requests.patch(
        f"{stack['lb']}/api/v1/experiences/hero/",
        json={"name": "Hero, edited"},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert edit.status_code == 200, edit.text
    assert edit.headers["X-Kairos-Replica"] in {"web1", "web2"}
    edited = time.monotonic()
    # The promise, not the product's own figure: a replica reads the published version a
    # quarter second after its last read (runtime.SNAPSHOT_CHECK_SECONDS), well inside it.
    deadline = edited + EDIT_SEEN_WITHIN
    waiting = set(stack["decide"])
    while waiting:
        assert time.monotonic() < deadline, f"{waiting} still answer version {before}"
        for url in list(waiting):
            if decide(url, key, "visitor-1").json()["assignments"]["hero"]["version"] != before:
                waiting.discard(url)


def test_events__through_the_lb__stored_once_by_two_drains(stack):
    project = project_off_the_stream_node(stack["redis"])  # the live update and the stream on two nodes
    key = factories.key_make(project=project)
    events = [factories.event_make(n, anonymous_id=f"anon-{n}") for n in range(240)]
    batches = [events[start : start + 40] for start in range(0, 240, 40)]
    replicas = set()
    for batch in [*batches, batches[2]]:  # the snippet sends a batch again when it saw no answer
        response = requests.post(
            f"{stack['lb']}/api/v1/events",
            json={"events": batch},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        replicas.add(response.headers["X-Kairos-Replica"])
    assert replicas == {"decide1", "decide2"}
    stream = redis_client.worker()
    deadline = time.monotonic() + 30
    while (
        Event.objects.filter(project=project).count() < 240
        or stream.xpending(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP)["pending"]
    ):
        assert time.monotonic() < deadline, "the drains did not store the events"
        time.sleep(0.05)
    ids = list(Event.objects.filter(project=project).values_list("event_id", flat=True))
    assert sorted(ids) == sorted(f"ev-{n}" for n in range(240))
    # Both drains ran through it (which one took which batch is up to the consumer group).
    assert [drain.poll() for drain in stack["drains"]] == [None, None]


def test_client_ip__the_callers_not_one_it_claims(stack):
    """Behind the LB the replicas rate-limit by the address HAProxy saw; an X-Forwarded-For the
    client sends is kept but not believed (KAIROS_TRUSTED_PROXIES=1 takes the LB's entry)."""
    project = factories.project_make(name="Addresses")
    key = factories.key_make(project=project)
    experience_make(project)
    decide(stack["lb"], key, "visitor-1", **{"X-Forwarded-For": "203.0.113.9"})
    counters = [name.decode() for name in redis_client.worker().scan_iter("kr:*:rl:d:ip:*")]
    assert counters and all(":rl:d:ip:127.0.0.1:" in name for name in counters), counters
