"""Redis: one server, or a Redis Cluster of 3 masters and 3 replicas (redis-1 ... redis-6)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from devstack import cluster, health
from devstack.components import (
    HOST,
    Component,
    RedisMode,
    StackError,
    find_program,
    kind_of,
    require_program,
)
from devstack.ports import REDIS_NODES
from devstack.process import run, tail
from devstack.services.base import Launch, Service, Site

# How long a Redis Cluster may take to be whole once its nodes answer: created, gossip settled.
_CLUSTER_TIMEOUT_S = 60


class Redis(Service):
    """The stack's Redis: ``redis``, or the cluster's nodes ``redis-1`` ... ``redis-6``."""

    kind = "redis"
    tier = 0
    start_timeout_s = 20
    stop_grace_s = 15

    def __init__(self, site: Site, mode: RedisMode) -> None:
        super().__init__(site)
        self.mode: RedisMode = mode

    def names(self) -> list[str]:
        """Its components: ``redis``, or the cluster's nodes ``redis-1`` ... ``redis-6``."""
        if self.mode == "cluster":
            return [f"redis-{i}" for i in range(1, REDIS_NODES + 1)]
        return ["redis"]

    def port(self, index: int) -> int:
        return self.site.ports.redis_node(index) if index else self.site.ports.redis

    def nodes(self) -> dict[str, str]:
        """Each component's URL (database 0) by name."""
        return {name: f"redis://{HOST}:{self._port_of(name)}/0" for name in self.names()}

    @property
    def url(self) -> str:
        """Its URL; of a cluster, its first node, a seed for cluster clients."""
        return self.nodes()[self.names()[0]]

    def roles(self) -> dict[str, cluster.Role]:
        """Of a cluster: each node's role (master or replica of whom), as a live node sees it."""
        if self.mode != "cluster":
            raise StackError("redis_roles() needs a Redis Cluster (REDIS=cluster)")
        return cluster.roles(self._cluster_ports())

    def hint(self) -> str:
        return "check that redis-server works (scripts/bootstrap.sh installs it)"

    def missing(self) -> list[str]:
        programs = ["redis-server", *(["redis-cli"] if self.mode == "cluster" else [])]
        return [p for p in programs if not find_program(p)]

    def listens(self, component: Component) -> list[int]:
        # A cluster node has its cluster bus too.
        if component.index:
            return [component.port, self.site.ports.redis_bus(component.index)]
        return [component.port]

    def prepare(self, component: Component) -> Launch:
        # redis/ of the single server; redis-<n>/ of each cluster node, beside its nodes.conf.
        data = self.site.state_dir / component.name
        data.mkdir(parents=True, exist_ok=True)
        index = component.index
        node = cluster.node_argv(bus_port=self.site.ports.redis_bus(index)) if index else []
        return Launch([
            require_program("redis-server"),
            "--bind", HOST,
            "--port", str(component.port),
            "--dir", str(data),
            "--daemonize", "no",
            "--logfile", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            # The append-only file is the durable copy; periodic snapshots would only add forks.
            "--save", "",
            # Dedup records, seq counters and recent logs carry guarantees: a full Redis must
            # refuse writes (the sender gets an error and retries), never evict them silently.
            "--maxmemory-policy", "noeviction",
            *node,
        ])  # fmt: skip

    def probe(self, component: Component) -> Callable[[], bool]:
        url = f"redis://{HOST}:{component.port}/0"
        return lambda: health.redis_ping(url)

    def await_cluster(self, cancel: threading.Event) -> None:
        """Create the Redis Cluster if its nodes never met; wait until every slot is served."""
        ports = self._cluster_ports()
        log = self.site.log_path("redis-cluster")
        say = self.site.say
        if cluster.is_fresh(ports):
            cluster.reset(ports)
            masters = len(ports) // (1 + cluster.REPLICAS_PER_MASTER)
            say(
                f"redis: creating the cluster ({masters} masters, "
                f"{len(ports) - masters} replicas) with redis-cli --cluster create"
            )
            argv = cluster.create_argv(require_program("redis-cli"), ports)
            code = run(argv, log=log, timeout=_CLUSTER_TIMEOUT_S)
            if code != 0:
                raise self._cluster_failure(f"redis-cli --cluster create failed with code {code}")
        deadline = time.monotonic() + _CLUSTER_TIMEOUT_S
        waited = False
        while (why := cluster.problem(ports)) is not None:
            if cancel.is_set():
                raise StackError("redis: start cancelled")
            if time.monotonic() >= deadline:
                raise self._cluster_failure(
                    f"the Redis Cluster is not whole after {_CLUSTER_TIMEOUT_S}s: {why}"
                )
            if not waited:
                say(f"redis: waiting for the cluster ({why})")
                waited = True
            time.sleep(0.2)
        say(f"redis: cluster ok, all {cluster.HASH_SLOTS} slots served, each master replicated")

    def _port_of(self, name: str) -> int:
        return self.port(kind_of(name)[1])

    def _cluster_ports(self) -> dict[str, int]:
        return {name: self._port_of(name) for name in self.names()}

    def _cluster_failure(self, what: str) -> StackError:
        log = self.site.log_path("redis-cluster")
        dirs = ", ".join(str(self.site.state_dir / name) for name in self.names())
        return StackError(
            f"{what}.\n--- last lines of {log} ---\n{tail(log)}\n---\n"
            f"Each node's own log is {self.site.logs_dir}/redis-<n>.log. What to do: if the "
            f"nodes' cluster state is damaged, stop the stack (make dev-stop) and remove {dirs} "
            f"(a new, empty cluster is created); then start again."
        )
