"""Keys written before the Redis Cluster hash tags keep their data under the new names
(personalization/redis_migrate.py): renamed whole, or merged where the new name exists already."""

from django.core.management import call_command

from personalization import redis_client, rkeys


def test_old_names__renamed_with_their_data_and_merged_where_new_ones_exist():
    client = redis_client.worker()
    client.hset("kr:7:u:alice", mapping={"a:hero": "v2", "segs": "big"})
    client.expire("kr:7:u:alice", 3600)
    client.hset("kr:7:u:bob", mapping={"a:hero": "v1", "a:promo": "b"})
    client.hset(rkeys.unit(7, "bob"), "a:hero", "v0")  # written by the new release before the rename ran
    client.sadd("kr:7:suppressed", "digest-1")
    client.sadd(rkeys.suppressed(7), "digest-2")
    client.xgroup_create("kr:events", rkeys.EVENTS_GROUP, id="0", mkstream=True)
    read_id = client.xadd("kr:events", {"p": 7, "d": "[1]"})
    client.xreadgroup(rkeys.EVENTS_GROUP, "drain-1", {"kr:events": ">"}, count=1)  # read, not acknowledged
    client.hset("kr:events:queued", "7", 3)
    client.hset(rkeys.EVENTS_QUEUED, "7", 2)
    client.set("kr:rl:e:k:1:99", 5)  # a rate counter of the old release: left to expire

    call_command("redis_keys_migrate")

    assert client.hgetall(rkeys.unit(7, "alice")) == {b"a:hero": b"v2", b"segs": b"big"}
    assert 3500 < client.ttl(rkeys.unit(7, "alice")) <= 3600
    assert client.hgetall(rkeys.unit(7, "bob")) == {b"a:hero": b"v0", b"a:promo": b"b"}  # the newer answer wins
    assert client.smembers(rkeys.suppressed(7)) == {b"digest-1", b"digest-2"}
    assert client.xpending(rkeys.EVENTS_STREAM, rkeys.EVENTS_GROUP)["pending"] == 1
    assert [entry_id for entry_id, _ in client.xrange(rkeys.EVENTS_STREAM)] == [read_id]
    assert client.hget(rkeys.EVENTS_QUEUED, "7") == b"5"
    assert sorted(client.keys("kr:*")) == sorted(
        name.encode()
        for name in (
            rkeys.unit(7, "alice"),
            rkeys.unit(7, "bob"),
            rkeys.suppressed(7),
            rkeys.EVENTS_STREAM,
            rkeys.EVENTS_QUEUED,
            "kr:rl:e:k:1:99",
        )
    )
    call_command("redis_keys_migrate")  # a second run finds nothing to do
    assert client.hget(rkeys.EVENTS_QUEUED, "7") == b"5"
