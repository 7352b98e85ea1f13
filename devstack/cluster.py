"""The local Redis Cluster: what each node says about it, whether it is whole, how it is made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

from devstack.components import HOST
from devstack.health import no_retry

HASH_SLOTS = 16384
REPLICAS_PER_MASTER = 1
# A master unreachable this long is failed over: a kill -9 costs seconds, not the default 15 s.
NODE_TIMEOUT_MS = 2000
# Flags of a peer that is not (yet) a working member of the cluster.
_UNWELL = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True, slots=True)
class Slots:
    """The hash slots a master serves: ranges, both ends included; ``len`` counts them."""

    ranges: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return sum(high - low + 1 for low, high in self.ranges)

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and any(low <= slot <= high for low, high in self.ranges)


@dataclass(frozen=True, slots=True)
class Peer:
    """One line of ``CLUSTER NODES``: a node as another node (or itself) sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: Slots
    connected: bool

    @property
    def is_master(self) -> bool:
        """The node is a master in this view (it may serve no slot)."""
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        """The viewer takes the node for failed, or does not know it fully yet."""
        return bool(self.flags & _UNWELL)


@dataclass(frozen=True, slots=True)
class Role:
    """What a node is in the cluster, as a live node sees it."""

    role: Literal["master", "replica"]
    # The master's component name, for a replica.
    master: str | None
    slots: Slots
    failing: bool


def node_argv(*, bus_port: int) -> list[str]:
    """The ``redis-server`` options that make a node of this cluster (its dir holds nodes.conf)."""
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        "--cluster-port", str(bus_port),
        "--cluster-announce-ip", HOST,
        # Each master has one replica: a (re)joining replica syncs at once, without the default
        # 5 s wait for others to share the transfer.
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip


def create_argv(redis_cli: str, ports: Mapping[str, int]) -> list[str]:
    """``redis-cli --cluster create``: the first half masters, one replica for each."""
    return [
        redis_cli,
        "--cluster", "create",
        *(f"{HOST}:{port}" for port in ports.values()),
        "--cluster-replicas", str(REPLICAS_PER_MASTER),
        "--cluster-yes",
    ]  # fmt: skip


def parse_nodes(reply: Mapping[str, Mapping[str, Any]]) -> list[Peer]:
    """The peers of a ``CLUSTER NODES`` reply, as redis-py parses it (keyed by address)."""
    peers = []
    for address, node in reply.items():
        port = address.split("@", 1)[0].rsplit(":", 1)[-1]
        # A range is [low, high], a single slot [slot].
        ranges = tuple((int(span[0]), int(span[-1])) for span in node["slots"])
        peers.append(
            Peer(
                node_id=str(node["node_id"]),
                port=int(port) if port.isdigit() else 0,
                flags=frozenset(str(node["flags"]).split(",")),
                master_id=None if node["master_id"] == "-" else str(node["master_id"]),
                slots=Slots(ranges),
                connected=bool(node["connected"]),
            )
        )
    return peers


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host=HOST,
        port=port,
        socket_connect_timeout=1,
        socket_timeout=2,
        decode_responses=True,
        retry=no_retry(),
    )


def _ask(port: int, command: str, *args: str) -> Any:
    """The reply to a ``CLUSTER`` subcommand (``INFO``, ``NODES``); None if the node is silent."""
    client = _client(port)
    try:
        return client.cluster(command, *args)
    except redis.RedisError:
        return None
    finally:
        client.close()


def cluster_info(port: int) -> dict[str, str] | None:
    """``CLUSTER INFO`` of one node, None when it does not answer."""
    reply = _ask(port, "INFO")
    return None if reply is None else {str(k): str(v) for k, v in reply.items()}


def _peers(port: int) -> list[Peer] | None:
    reply = _ask(port, "NODES")
    return None if reply is None else parse_nodes(reply)


def _link_up(port: int) -> bool:
    client = _client(port)
    try:
        return client.info("replication").get("master_link_status") == "up"
    except redis.RedisError:
        return False
    finally:
        client.close()


def is_fresh(ports: Mapping[str, int]) -> bool:
    """No node has met another: the cluster is still to be created."""
    for port in ports.values():
        info = cluster_info(port)
        if info is None or info.get("cluster_known_nodes") != "1":
            return False
    return True


def reset(ports: Mapping[str, int]) -> None:
    """Forget a creation that stopped half-way (slots given, nodes not met): nodes as new."""
    for port in ports.values():
        info = cluster_info(port)
        if info is None or info.get("cluster_slots_assigned") == "0":
            continue
        client = _client(port)
        try:
            # A node that never met another could not have served a write: nothing is lost.
            client.flushall()
            client.cluster("RESET", "HARD")
        finally:
            client.close()


def problem(ports: Mapping[str, int]) -> str | None:
    """Why the cluster is not whole yet, or None when every node serves every slot."""
    names = {port: name for name, port in ports.items()}
    # Every node must see the cluster whole; the first node's view then says who serves what.
    first: list[Peer] = []
    for name, port in ports.items():
        info = cluster_info(port)
        if info is None:
            return f"{name} does not answer"
        if info.get("cluster_state") != "ok":
            return f"{name} reports cluster_state:{info.get('cluster_state')}"
        if info.get("cluster_slots_ok") != str(HASH_SLOTS):
            return f"{name} sees {info.get('cluster_slots_ok')} of {HASH_SLOTS} slots served"
        if info.get("cluster_known_nodes") != str(len(ports)):
            return f"{name} knows {info.get('cluster_known_nodes')} of {len(ports)} nodes"
        peers = _peers(port)
        if peers is None:
            return f"{name} does not answer"
        first = first or peers
        for peer in peers:
            peer_name = names.get(peer.port, f"{HOST}:{peer.port}")
            if peer.failing or not (peer.connected or "myself" in peer.flags):
                return f"{name} sees {peer_name} as {','.join(sorted(peer.flags))}"
        myself = next(p for p in peers if "myself" in p.flags)
        if not myself.is_master and not _link_up(port):
            return f"{name} (a replica) has not synced with its master yet"
    masters = [p for p in first if p.is_master and p.slots]
    replicated = {p.master_id for p in first if not p.is_master}
    wanted = len(ports) // (1 + REPLICAS_PER_MASTER)
    if len(masters) != wanted:
        return f"{len(masters)} masters serve slots, not {wanted}"
    alone = [names.get(m.port, str(m.port)) for m in masters if m.node_id not in replicated]
    if alone:
        return f"no replica yet for {', '.join(sorted(alone))}"
    return None


def roles(ports: Mapping[str, int]) -> dict[str, Role]:
    """Each node's role, as the first node that answers sees it (a dead node's too)."""
    names = {port: name for name, port in ports.items()}
    for port in ports.values():
        peers = _peers(port)
        if peers is None:
            continue
        by_id = {p.node_id: names.get(p.port) for p in peers}
        return {
            names[p.port]: Role(
                role="master" if p.is_master else "replica",
                master=None if p.master_id is None else by_id.get(p.master_id),
                slots=p.slots,
                failing=p.failing,
            )
            for p in peers
            if p.port in names
        }
    raise RuntimeError(f"no node of the cluster answers on ports {sorted(names)}")
