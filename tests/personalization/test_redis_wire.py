"""The bare Redis connection decide uses: same answers as redis-py, and it survives failures."""

import pytest
import redis

from personalization import redis_client
from personalization.decide import redis_wire


@pytest.fixture
def wire():
    conn = redis_wire.Connection.like(redis_client.fast())
    yield conn
    conn.close()


def test_command_pack__same_bytes_as_redis_py():
    packer = redis_client.fast().connection_pool.make_connection()
    commands = [("HGETALL", "kr:u:1:é"), ("SET", b"k\r\n", 42), ("GET", "v")]
    assert redis_wire.command_pack(*commands) == b"".join(packer.pack_commands(commands))


def test_execute__several_commands__replies_in_order_on_the_configured_database(wire):
    worker = redis_client.worker()
    worker.hset("h", mapping={"attr:plan": "pro", "segs": "a b"})
    worker.set("v", "7")

    hgetall, value, missing = wire.execute(("HGETALL", "h"), ("GET", "v"), ("GET", "nope"))

    assert dict(zip(hgetall[::2], hgetall[1::2], strict=True)) == {b"attr:plan": b"pro", b"segs": b"a b"}
    assert (value, missing) == (b"7", None)
    # The test Redis database is not 0 (see conftest), so this also proves SELECT happened.
    assert worker.connection_pool.connection_kwargs["db"] != 0


def test_execute__error_reply__raises_and_the_next_call_works(wire):
    redis_client.worker().set("s", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        wire.execute(("HGETALL", "s"), ("GET", "s"))
    assert wire.execute(("GET", "s")) == [b"x"]


def test_execute__server_drops_the_connection__connection_error_then_reconnects(wire):
    wire.execute(("CLIENT", "SETNAME", "wire-under-test"))
    worker = redis_client.worker()
    (mine,) = [c for c in worker.client_list() if c["name"] == "wire-under-test"]
    assert worker.client_kill_filter(_id=mine["id"]) == 1
    with pytest.raises(redis.ConnectionError):
        wire.execute(("PING",))
    assert wire.execute(("PING",)) == [b"PONG"]


def test_execute__nothing_listening__connection_error_quickly():
    conn = redis_wire.Connection(host="127.0.0.1", port=1, connect_timeout=0.2)
    with pytest.raises(redis.ConnectionError, match="cannot connect"):
        conn.execute(("PING",))
