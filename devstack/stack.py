"""A private stack on one machine: Redis, PostgreSQL, Kafka, gateways, function hosts, haproxy.

``Stack`` composes one service per kind (``devstack.services``) and runs them as a whole: what a
start needs, in tiers, provisioned, through the state dir's ``Supervisor``, published in
``endpoints.json``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from chat.settings import env_name, env_values
from devstack import cluster, provision
from devstack.components import (
    HOST,
    REDIS_MODES,
    REPO,
    SERVICES,
    Component,
    Kind,
    RedisMode,
    StackError,
    kind_of,
    order,
    redis_mode_from_env,
)
from devstack.endpoints import EndpointsFile, dev_secret
from devstack.ports import SLOTS, Ports
from devstack.services.base import Service, Site
from devstack.services.haproxy import LoadBalancer
from devstack.services.kafka import Kafka
from devstack.services.nodes import FunctionHosts, Gateways
from devstack.services.postgres import Postgres
from devstack.services.redis import Redis
from devstack.supervisor import Supervisor

# The names other modules, tests and the bench import from here.
__all__ = [
    "HOST",
    "REDIS_MODES",
    "REPO",
    "SERVICES",
    "Component",
    "Kind",
    "RedisMode",
    "Stack",
    "StackError",
    "kind_of",
    "redis_mode_from_env",
]


def _say(line: str) -> None:
    print(line, flush=True)


class Stack:
    """The local stack kept in ``state_dir``; another process may drive the same one."""

    def __init__(
        self,
        state_dir: Path,
        ports: Ports,
        gateways: int = 2,
        function_hosts: int = 1,
        *,
        durable: bool = True,
        redis_mode: RedisMode = "standalone",
        kafka_lib: Path | None = None,
        progress: Callable[[str], None] = _say,
    ) -> None:
        if not 0 <= gateways <= SLOTS or not 0 <= function_hosts <= SLOTS:
            raise ValueError(f"gateways and function_hosts must be in 0..{SLOTS}")
        if redis_mode not in REDIS_MODES:
            raise ValueError(f"redis_mode must be standalone or cluster, not {redis_mode!r}")
        self.state_dir = Path(state_dir).absolute()
        self.ports = ports
        self.gateways = gateways
        self.function_hosts = function_hosts
        # Off only for throwaway test data: PostgreSQL then skips fsync and full-page writes.
        self.durable = durable
        self._progress = progress
        self._extra: dict[str, tuple[str, ...]] = {}
        self._print_lock = threading.Lock()
        self._clock = time.monotonic()
        self._endpoints = EndpointsFile(self.state_dir / "endpoints.json")
        # Set when a start is abandoned (Ctrl-C, stop): its workers spawn nothing more.
        self._cancel = threading.Event()
        self._inflight: list[Future[bool]] = []
        site = self._site = Site(self.state_dir, ports, durable, self._say)
        self._supervisor = Supervisor(site, self._cancel)
        # One Redis server, or a Redis Cluster of 3 masters and 3 replicas (redis-1 ... redis-6).
        self.redis = Redis(site, redis_mode)
        self.postgres = Postgres(site)
        self.kafka = Kafka(site, kafka_lib)
        self.gateway_nodes = Gateways(site, self._argv_for)
        self.function_nodes = FunctionHosts(site, self._argv_for)
        self.lb = LoadBalancer(site, self._lb_gateways)
        self._services: dict[Kind, Service] = {
            s.kind: s
            for s in (
                self.redis,
                self.postgres,
                self.kafka,
                self.gateway_nodes,
                self.function_nodes,
                self.lb,
            )
        }

    @property
    def redis_mode(self) -> RedisMode:
        """``standalone`` (one server) or ``cluster``."""
        return self.redis.mode

    def missing(self) -> list[str]:
        """What this machine lacks to run the stack (empty when nothing); bootstrap installs it."""
        return [lack for service in self._services.values() for lack in service.missing()]

    # ----- names, addresses, environment -----

    @property
    def logs_dir(self) -> Path:
        """Where each component's log is: ``<name>.log``."""
        return self._site.logs_dir

    def log_path(self, name: str) -> Path:
        """The log file of a component."""
        return self._site.log_path(name)

    def redis_names(self) -> list[str]:
        """The Redis components: ``redis``, or the cluster's nodes ``redis-1`` ... ``redis-6``."""
        return self.redis.names()

    def services(self) -> list[str]:
        """The backing services' components (Redis, PostgreSQL, Kafka), in start order."""
        return [*self.redis_names(), *SERVICES[1:]]

    def configured(self) -> list[str]:
        """The components this stack is made of, in start order."""
        return [
            *self.services(),
            *(f"gateway-{i}" for i in range(1, self.gateways + 1)),
            *(f"functions-{i}" for i in range(1, self.function_hosts + 1)),
            "lb",
        ]

    def component(self, name: str) -> Component:
        """The component called ``name``."""
        kind, index = kind_of(name)
        return Component(name, kind, self._services[kind].port(index))

    @property
    def redis_url(self) -> str:
        """Redis URL (database 0); of a cluster, its first node, a seed for cluster clients."""
        return self.redis.url

    def redis_nodes(self) -> dict[str, str]:
        """Each Redis component's URL by name: ``{"redis": ...}`` or ``redis-1`` ... ``redis-6``."""
        return self.redis.nodes()

    def redis_roles(self) -> dict[str, cluster.Role]:
        """Of a cluster: each node's role (master or replica of whom), as a live node sees it."""
        return self.redis.roles()

    @property
    def kafka_bootstrap(self) -> str:
        """Kafka bootstrap servers."""
        return self.kafka.bootstrap

    @property
    def postgres_dsn(self) -> str:
        """DSN of the application's database, as its role."""
        return self.postgres.dsn

    @property
    def entry_url(self) -> str:
        """The load-balanced base URL."""
        return self.lb.url

    @property
    def http_url(self) -> str:
        """Base URL of the first function host (history routes)."""
        return f"http://{HOST}:{self.ports.functions(1)}"

    @property
    def jwt_secret(self) -> str:
        """A random dev secret, made once per state dir and kept."""
        return dev_secret(self.state_dir)

    def env(self) -> dict[str, str]:
        """The ``CHAT_*`` settings every gateway and function host gets (but its node id)."""
        return env_values(
            environment="dev",
            redis_url=self.redis_url,
            redis_mode=self.redis_mode,
            # A cluster acks an accepted send once its master's replica holds it.
            redis_wait_replicas=1 if self.redis_mode == "cluster" else 0,
            kafka_bootstrap=self.kafka_bootstrap,
            postgres_dsn=self.postgres_dsn,
            dev_auth=True,
            jwt_secret=self.jwt_secret,
            history_url=self.http_url,
            cors_origins=self._page_origins(),
        )

    def _page_origins(self) -> tuple[str, ...]:
        """Where a browser may load the chat page from: the entry and each gateway, by name too."""
        ports = [self.ports.entry, *(self.ports.gateway(i) for i in range(1, self.gateways + 1))]
        return tuple(f"http://{host}:{port}" for port in ports for host in (HOST, "localhost"))

    def _child_env(self, name: str) -> dict[str, str]:
        return {**os.environ, **self.env(), env_name("node_id"): name, "PYTHONUNBUFFERED": "1"}

    # ----- what runs -----

    def components(self) -> list[str]:
        """Every component of this stack: configured, started as extra, or found running."""
        names = dict.fromkeys([*self.configured(), *self._extra, *self._supervisor.recorded()])
        return sorted(names, key=order)

    def pid(self, name: str) -> int | None:
        """The pid of a running component, None when it does not run."""
        kind_of(name)
        record = self._supervisor.running(name)
        return record.pid if record else None

    def endpoints(self) -> dict[str, Any]:
        """Where everything answers, per the operator contract (``.devstack/endpoints.json``)."""
        known = self.components()
        gateways = [n for n in known if kind_of(n)[0] == "gateway"]
        pids = {n: r.pid for n in known if (r := self._supervisor.running(n))}
        return {
            "ws_urls": [f"http://{HOST}:{self.component(n).port}" for n in gateways],
            "entry_url": self.entry_url,
            "http_url": self.http_url,
            "web_url": self.entry_url + "/",
            "redis_url": self.redis_url,
            "redis_mode": self.redis_mode,
            "redis_nodes": [{"name": n, "url": url} for n, url in self.redis_nodes().items()],
            "kafka_bootstrap": self.kafka_bootstrap,
            "postgres_dsn": self.postgres_dsn,
            "dev_auth": True,
            "jwt_secret": self.jwt_secret,
            "pids": pids,
        }

    def _publish(self) -> None:
        """Keep endpoints.json in step with what runs; gone when nothing does."""
        self._endpoints.publish(self.endpoints())

    # ----- start -----

    def start(self, components: Iterable[str] | None = None) -> None:
        """Start what is missing of ``components`` (default all) and their dependencies; wait."""
        with self._supervisor.locked():
            self._clock = time.monotonic()
            self._cancel.clear()
            wanted = self._expand(components)
            self._refuse_other_redis_mode(wanted)
            started: list[str] = []
            try:
                for tier in (0, 1, 2):
                    names = [n for n in wanted if self._service(n).tier == tier]
                    started += self._start_all(names)
                    if tier == 0 and self.redis_mode == "cluster" and self._wants_redis(wanted):
                        self.redis.await_cluster(self._cancel)
                    if tier == 0 and provision.needed(self._site, self.services(), wanted, started):
                        provision.provision(self._site, self._child_env("provision"))
            finally:
                self._publish()
            self._say(f"ready: {len(wanted)} components, {len(started)} started")

    def start_gateway(self, name: str) -> None:
        """Start one more gateway node (``gateway-3``), beside the configured ones."""
        if kind_of(name)[0] != "gateway":
            raise ValueError(f"{name!r} is not a gateway name (gateway-<n>)")
        self._extra[name] = self.gateway_nodes.default_argv(self.component(name))
        self.start([name])

    def start_function_host(self, name: str, only: list[str] | None = None) -> None:
        """Start one more function host (``functions-2``), optionally with only some functions."""
        if kind_of(name)[0] != "functions":
            raise ValueError(f"{name!r} is not a function host name (functions-<n>)")
        argv = self.function_nodes.default_argv(self.component(name))
        if only:
            argv += ("--only", ",".join(only))
        self._extra[name] = argv
        self.start([name])

    def _service(self, name: str) -> Service:
        return self._services[kind_of(name)[0]]

    def _members(self, name: str) -> list[str]:
        """The components a name stands for: ``redis`` of a cluster is all its nodes."""
        kind_of(name)
        return self.redis_names() if name == "redis" else [name]

    def _expand(self, components: Iterable[str] | None) -> list[str]:
        if components is None:
            names = [*self.configured(), *self._extra]
        else:
            names = [member for name in components for member in self._members(name)]
        wanted = dict.fromkeys(names)
        for name in names:
            kind = kind_of(name)[0]
            if kind == "redis" and name not in self.redis_names():
                raise ValueError(
                    f"{name} is not a Redis component of this stack, whose Redis runs "
                    f"{self.redis_mode} ({', '.join(self.redis_names())}); "
                    f"REDIS=cluster or REDIS=standalone picks the other"
                )
            if kind == "redis":
                # A cluster node is of use only with the others: starting one starts the missing.
                wanted.update(dict.fromkeys(self.redis_names()))
            if kind in ("gateway", "functions", "lb"):
                wanted.update(dict.fromkeys(self.services()))
            if kind == "lb":
                wanted.update(
                    dict.fromkeys(n for n in self.configured() if n.startswith("gateway-"))
                )
        return sorted(wanted, key=order)

    def _wants_redis(self, wanted: list[str]) -> bool:
        """True when ``wanted`` holds a Redis component of this stack."""
        return any(name in wanted for name in self.redis_names())

    def _refuse_other_redis_mode(self, wanted: list[str]) -> None:
        """Never run both kinds of Redis from one state dir: gateways would use one or the other."""
        if not self._wants_redis(wanted):
            return
        others = [
            name
            for name in self._supervisor.recorded()
            if kind_of(name)[0] == "redis"
            and name not in self.redis_names()
            and self._supervisor.running(name)
        ]
        if others:
            other = "standalone" if self.redis_mode == "cluster" else "cluster"
            raise StackError(
                f"{self.state_dir} runs Redis {other} ({', '.join(sorted(others, key=order))}): "
                f"stop that stack first (make dev-stop), then start it again with "
                f"REDIS={self.redis_mode}"
            )

    def _start_all(self, names: list[str]) -> list[str]:
        """Bring up ``names`` side by side; return the ones that were started."""
        if not names:
            return []
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = {name: pool.submit(self._bring_up, name) for name in names}
            self._inflight = list(futures.values())
        self._inflight = []
        errors = [str(f.exception()) for f in futures.values() if f.exception() is not None]
        if errors:
            raise StackError("\n\n".join(errors))
        return [name for name, f in futures.items() if f.result()]

    def _bring_up(self, name: str) -> bool:
        service = self._service(name)
        return self._supervisor.bring_up(service, self.component(name), self._child_env(name))

    def _argv_for(self, component: Component) -> tuple[str, ...]:
        """A node's command: as started (an extra node), else its kind's default."""
        if component.name in self._extra:
            return self._extra[component.name]
        if component.name not in self.configured():
            # An extra node started by another process: restart it as it was started.
            record = self._supervisor.record(component.name)
            if record is not None:
                return record.argv
        nodes = self.gateway_nodes if component.kind == "gateway" else self.function_nodes
        return nodes.default_argv(component)

    def _lb_gateways(self) -> list[tuple[str, int]]:
        """The configured gateways the load balancer balances over, with their ports."""
        return [(n, self.component(n).port) for n in self.configured() if n.startswith("gateway-")]

    # ----- stop and kill -----

    def stop(self, components: Iterable[str] | None = None) -> None:
        """Stop ``components`` (default: all this state dir runs): the entry first, data last."""
        self.cancel()
        with self._supervisor.locked():
            self._clock = time.monotonic()
            if components is None:
                names = self.components()
            else:
                members = (member for name in components for member in self._members(name))
                names = sorted(dict.fromkeys(members), key=order)
            try:
                for tier in (2, 1, 0):
                    batch = [
                        n
                        for n in names
                        if self._service(n).tier == tier and self._supervisor.record(n)
                    ]
                    if batch:
                        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                            list(pool.map(self._stop_one, batch))
            finally:
                self._publish()

    def cancel(self) -> None:
        """Abandon a start in progress (signal handler, other thread); wait for its workers."""
        if self._inflight:
            self._cancel.set()
            # initdb and the Kafka format are the slowest steps a worker cannot leave early.
            wait(self._inflight, timeout=150)
            self._inflight = []

    def _stop_one(self, name: str) -> None:
        self._supervisor.stop(self._service(name), self.component(name))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a component's process group (a crash by default); SIGKILL waits.

        ``redis`` of a cluster stands for all its nodes; ``redis-<n>`` is one node.
        """
        members = self._members(name)
        with self._supervisor.locked():
            records = [r for member in members if (r := self._supervisor.running(member))]
            if not records:
                raise StackError(f"{name} is not running")
            self._supervisor.kill(records, sig)
            self._publish()

    # ----- helpers -----

    def _say(self, message: str) -> None:
        with self._print_lock:
            self._progress(f"[{time.monotonic() - self._clock:5.1f}s] {message}")
