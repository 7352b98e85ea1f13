"""The local stack's Redis Cluster: 3 replicated masters over every slot, failover and rejoin."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chat.settings import Settings
from devstack import Stack
from devstack.cluster import HASH_SLOTS, NODE_TIMEOUT_MS, problem
from devstack.ports import BLOCK, REDIS_NODES, Ports
from devstack.stack import StackError, redis_mode_from_env
from devstack.testing import (
    kill_master,
    make_stack,
    redis_master_of,
    start_or_fail,
    stop_and_remove,
)

NODES = [f"redis-{i}" for i in range(1, REDIS_NODES + 1)]


@pytest.fixture(scope="module")
def cluster_stack() -> Iterator[Stack]:
    """A stack of its own whose only components are the six nodes of a Redis Cluster."""
    stack = make_stack("chat-cluster-stack-", gateways=0, function_hosts=0, redis_mode="cluster")
    try:
        start_or_fail(stack, ["redis"])
        yield stack
    finally:
        stop_and_remove(stack)


def _cluster_client(stack: Stack) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(stack.redis_url, socket_timeout=5, decode_responses=True)


def _node(stack: Stack, name: str) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=stack.component(name).port, socket_timeout=5, decode_responses=True
    )


def _listening(port: int) -> set[str]:
    """The local addresses that listen on TCP ``port`` (hex as in /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.unit
def test_the_cluster_ports_stay_inside_the_block_and_apart() -> None:
    ports = Ports.from_base(20000)
    every = ports.all()

    assert len(every) == len(set(every))
    assert all(20000 <= port < 20000 + BLOCK for port in every)
    nodes = {ports.redis_node(i) for i in range(1, REDIS_NODES + 1)}
    buses = {ports.redis_bus(i) for i in range(1, REDIS_NODES + 1)}
    assert len(nodes | buses) == 2 * REDIS_NODES and ports.redis not in nodes | buses


@pytest.mark.unit
def test_redis_names_the_mode() -> None:
    assert redis_mode_from_env({}) == "standalone"
    assert redis_mode_from_env({"REDIS": ""}) == "standalone"
    assert redis_mode_from_env({"REDIS": "cluster"}) == "cluster"
    with pytest.raises(ValueError, match="REDIS=cluster"):
        redis_mode_from_env({"REDIS": "sentinel"})


def test_three_masters_each_with_a_replica_serve_every_slot(cluster_stack: Stack) -> None:
    roles = cluster_stack.redis_roles()

    assert sorted(roles) == NODES
    masters = {name: role for name, role in roles.items() if role.role == "master"}
    replicas = {name: role for name, role in roles.items() if role.role == "replica"}
    assert len(masters) == 3 and len(replicas) == 3
    assert sorted(role.master or "" for role in replicas.values()) == sorted(masters)
    served = [
        s
        for role in masters.values()
        for low, high in role.slots.ranges
        for s in range(low, high + 1)
    ]
    assert sorted(served) == list(range(HASH_SLOTS)), "each slot served by exactly one master"
    assert problem({name: cluster_stack.component(name).port for name in NODES}) is None
    for index, name in enumerate(NODES, start=1):
        node = _node(cluster_stack, name)
        try:
            info = node.cluster("INFO")
            config = node.config_get("*")
        finally:
            node.close()
        assert info["cluster_state"] == "ok" and info["cluster_known_nodes"] == "6", name
        assert config["cluster-enabled"] == "yes" and config["appendonly"] == "yes", name
        assert config["appendfsync"] == "everysec", name
        assert config["cluster-node-timeout"] == str(NODE_TIMEOUT_MS), name
        assert config["dir"] == str(cluster_stack.state_dir / name), name
        bus = cluster_stack.ports.redis_bus(index)
        assert config["cluster-port"] == str(bus), name
        # Clients and the cluster bus on loopback only (0100007F is 127.0.0.1).
        port = cluster_stack.component(name).port
        assert _listening(port) == {"0100007F"} and _listening(bus) == {"0100007F"}, name


def test_endpoints_and_children_name_the_cluster(
    cluster_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = json.loads((cluster_stack.state_dir / "endpoints.json").read_text())

    assert published["redis_mode"] == "cluster"
    assert [node["name"] for node in published["redis_nodes"]] == NODES
    for node in published["redis_nodes"]:
        assert node["url"] == f"redis://127.0.0.1:{cluster_stack.component(node['name']).port}/0"
    assert published["redis_url"] == published["redis_nodes"][0]["url"]
    assert published["pids"] == {name: cluster_stack.pid(name) for name in NODES}

    env = cluster_stack.env()
    assert env["CHAT_REDIS_MODE"] == "cluster"
    assert env["CHAT_REDIS_URL"] == published["redis_url"]
    assert env["CHAT_REDIS_WAIT_REPLICAS"] == "1"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    assert settings.redis_mode == "cluster" and settings.redis_wait_replicas == 1

    # The seed URL is enough for a cluster client to reach every slot.
    client = _cluster_client(cluster_stack)
    try:
        keys = [f"devstack-test:{i}" for i in range(30)]
        for key in keys:
            client.set(key, key)
        assert [client.get(key) for key in keys] == keys
        assert len({redis_master_of(cluster_stack, key) for key in keys}) == 3
    finally:
        client.close()


def test_a_killed_master_fails_over_and_rejoins_as_a_replica(cluster_stack: Stack) -> None:
    key = "devstack-test:{failover}"
    client = _cluster_client(cluster_stack)
    try:
        client.set(key, "kept")
        master = redis_master_of(cluster_stack, key)
        wait = _node(cluster_stack, master)
        try:
            assert wait.wait(1, 5000) == 1, "its replica should hold the write"
        finally:
            wait.close()
    finally:
        client.close()
    before = {name: cluster_stack.pid(name) for name in NODES}

    # WHEN the master that serves the key dies (kill -9)
    heir, seconds = kill_master(cluster_stack, master, timeout=30)
    print(f"\n{master} killed: {heir} serves its slots after {seconds:.1f}s")

    # THEN its replica took over, with the write
    assert seconds < 6 * NODE_TIMEOUT_MS / 1000, f"failover took {seconds:.1f}s"
    assert redis_master_of(cluster_stack, key) == heir
    promoted = _node(cluster_stack, heir)
    try:
        assert promoted.get(key) == "kept"
    finally:
        promoted.close()

    # WHEN the stack starts what is missing
    cluster_stack.start(["redis"])

    # THEN the old master is back as the replica of its heir, the rest untouched
    after = {name: cluster_stack.pid(name) for name in NODES}
    assert after[master] not in (None, before[master])
    assert {n: p for n, p in after.items() if n != master} == {
        n: p for n, p in before.items() if n != master
    }
    roles = cluster_stack.redis_roles()
    assert roles[master].role == "replica" and roles[master].master == heir
    assert not roles[master].slots and not roles[master].failing
    published = json.loads((cluster_stack.state_dir / "endpoints.json").read_text())
    assert published["pids"][master] == after[master]


def test_redis_stands_for_every_node(cluster_stack: Stack) -> None:
    before = {name: cluster_stack.pid(name) for name in NODES}

    cluster_stack.kill("redis", signal.SIGKILL)
    assert {name: cluster_stack.pid(name) for name in NODES} == dict.fromkeys(NODES)
    cluster_stack.start(["redis"])

    after = {name: cluster_stack.pid(name) for name in NODES}
    assert all(after[name] not in (None, before[name]) for name in NODES)
    assert problem({name: cluster_stack.component(name).port for name in NODES}) is None
    # A standalone Redis of the same state dir refuses to start beside the cluster.
    beside = Stack(
        cluster_stack.state_dir, cluster_stack.ports, 0, 0, durable=False, redis_mode="standalone"
    )
    with pytest.raises(StackError, match="make dev-stop"):
        beside.start(["redis"])
    with pytest.raises(ValueError, match="not a Redis component of this stack"):
        beside.start(["redis-1"])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", cluster_stack.ports.redis)) != 0


def test_a_creation_cut_short_is_made_again() -> None:
    stack = make_stack("chat-cluster-again-", gateways=0, function_hosts=0, redis_mode="cluster")
    try:
        start_or_fail(stack, ["redis"])
        # GIVEN nodes that never met, one already serving slots: redis-cli stopped half-way
        for name in NODES:
            node = _node(stack, name)
            try:
                node.cluster("RESET", "HARD")  # it holds no key: nothing was written
            finally:
                node.close()
        first = _node(stack, "redis-1")
        try:
            first.cluster("ADDSLOTSRANGE", "0", "99")
        finally:
            first.close()
        ports = {name: stack.component(name).port for name in NODES}
        assert problem(ports) is not None

        # WHEN the stack is started again (every node runs)
        stack.start(["redis"])

        # THEN it made the cluster again
        assert problem(ports) is None
        assert sorted(role.role for role in stack.redis_roles().values()) == 3 * ["master"] + 3 * [
            "replica"
        ]
    finally:
        stop_and_remove(stack)
