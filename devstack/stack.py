"""A private stack on one machine: Redis, PostgreSQL, Kafka, gateways, function hosts, haproxy."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, assert_never

import psycopg

from devstack import cluster, configs, health
from devstack.ports import REDIS_NODES, SLOTS, Ports, port_free
from devstack.process import (
    Record,
    alive,
    group_members,
    run,
    signal_group,
    spawn,
    start_time,
    tail,
    terminate,
    wait_gone,
)

REPO = Path(__file__).resolve().parent.parent
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
# The backing services. With a Redis Cluster, "redis" stands for its nodes redis-1 ... redis-6.
SERVICES = ("redis", "postgres", "kafka")
_KAFKA_JVM_FLAGS = (
    "-Xms256m",
    "-Xmx512m",
    # On 2 shared cores the optimising JIT (C2) took a third of the broker's CPU for minutes
    # after each start; C1 alone compiles fast and runs a single test broker well.
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
)
HOST = "127.0.0.1"

Kind = Literal["redis", "postgres", "kafka", "gateway", "functions", "lb"]
RedisMode = Literal["standalone", "cluster"]
REDIS_MODES: tuple[RedisMode, ...] = ("standalone", "cluster")

_START_TIMEOUT_S: dict[Kind, float] = {
    "redis": 20,
    "postgres": 60,
    "kafka": 120,
    "gateway": 60,
    "functions": 60,
    "lb": 20,
}
# How each kind is asked to stop, and how long it may take before SIGKILL.
# PostgreSQL: SIGINT is its "fast" shutdown (roll back sessions, checkpoint, exit).
_STOP: dict[Kind, tuple[int, float]] = {
    "redis": (signal.SIGTERM, 15),
    "postgres": (signal.SIGINT, 30),
    "kafka": (signal.SIGTERM, 30),
    "gateway": (signal.SIGTERM, 10),
    "functions": (signal.SIGTERM, 15),
    "lb": (signal.SIGTERM, 5),
}
_TIER: dict[Kind, int] = {
    "redis": 0,
    "postgres": 0,
    "kafka": 0,
    "gateway": 1,
    "functions": 1,
    "lb": 2,
}
_NODE_NAME = re.compile(r"(gateway|functions|redis)-([1-9][0-9]?)")
_NODE_KINDS: dict[str, tuple[Kind, int]] = {
    "gateway": ("gateway", SLOTS),
    "functions": ("functions", SLOTS),
    "redis": ("redis", REDIS_NODES),
}
# How long a Redis Cluster may take to be whole once its nodes answer: created, gossip settled.
_CLUSTER_TIMEOUT_S = 60


class StackError(RuntimeError):
    """A component did not start or stop; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Component:
    """One process of the stack: its name (``gateway-2``), kind and port."""

    name: str
    kind: Kind
    port: int


def kind_of(name: str) -> tuple[Kind, int]:
    """The kind of a component name and its node index (0 for singletons)."""
    match name:
        case "redis" | "postgres" | "kafka" | "lb":
            return name, 0
    node = _NODE_NAME.fullmatch(name)
    if node:
        kind, slots = _NODE_KINDS[node.group(1)]
        if int(node.group(2)) <= slots:
            return kind, int(node.group(2))
    raise ValueError(
        f"unknown component {name!r}: use redis, postgres, kafka, lb, "
        f"gateway-<1..{SLOTS}>, functions-<1..{SLOTS}> or redis-<1..{REDIS_NODES}> (cluster)"
    )


def redis_mode_from_env(environ: Mapping[str, str] = os.environ) -> RedisMode:
    """The Redis mode ``REDIS`` asks for: standalone (unset or empty) or cluster."""
    raw = environ.get("REDIS", "").strip().lower() or "standalone"
    for mode in REDIS_MODES:
        if raw == mode:
            return mode
    raise ValueError(
        f"REDIS must be standalone or cluster, not {environ.get('REDIS')!r}: "
        f"unset it for one Redis server, or set REDIS=cluster for a local Redis Cluster"
    )


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version the pom resolves."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not found:
        raise StackError(f"{pom} has no <kafka.version> property")
    return found.group(1).strip()


def postgres_bindir() -> Path:
    """Where PostgreSQL's server binaries live (``DEVSTACK_PG_BIN`` wins)."""
    override = os.environ.get("DEVSTACK_PG_BIN")
    candidates = [Path(override)] if override else []
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise StackError(
        "PostgreSQL server binaries not found: run scripts/bootstrap.sh (installs postgresql)"
    )


def _find(program: str) -> str | None:
    # haproxy lives in /usr/sbin, which a normal user's PATH often lacks.
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/local/sbin")


def _which(program: str) -> str:
    found = _find(program)
    if not found:
        raise StackError(f"{program} not found: run scripts/bootstrap.sh (installs it)")
    return found


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
        # One Redis server, or a Redis Cluster of 3 masters and 3 replicas (redis-1 ... redis-6).
        self.redis_mode: RedisMode = redis_mode
        # Off only for throwaway test data: PostgreSQL then skips fsync and full-page writes.
        self.durable = durable
        self.kafka_lib = kafka_lib or REPO / ".devstack" / f"kafka-lib-{kafka_version()}"
        self._progress = progress
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._extra: dict[str, tuple[str, ...]] = {}
        self._print_lock = threading.Lock()
        self._lock_depth = 0
        self._thread_lock = threading.RLock()
        self._clock = time.monotonic()
        self._published: str | None = None
        # Set when a start is abandoned (Ctrl-C, stop): its workers spawn nothing more.
        self._cancel = threading.Event()
        self._inflight: list[Future[bool]] = []

    def missing(self) -> list[str]:
        """What this machine lacks to run the stack (empty when nothing); bootstrap installs it."""
        programs = ["redis-server", "haproxy", "java"]
        if self.redis_mode == "cluster":
            programs.append("redis-cli")
        lacks = [p for p in programs if not _find(p)]
        try:
            postgres_bindir()
        except StackError:
            lacks.append("PostgreSQL server binaries")
        if not any(self.kafka_lib.glob("kafka_2.13-*.jar")):
            lacks.append(f"Kafka jars in {self.kafka_lib}")
        return lacks

    # ----- names, addresses, environment -----

    @property
    def logs_dir(self) -> Path:
        """Where each component's log is: ``<name>.log``."""
        return self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        """The log file of a component."""
        return self.logs_dir / f"{name}.log"

    def redis_names(self) -> list[str]:
        """The Redis components: ``redis``, or the cluster's nodes ``redis-1`` ... ``redis-6``."""
        if self.redis_mode == "cluster":
            return [f"redis-{i}" for i in range(1, REDIS_NODES + 1)]
        return ["redis"]

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
        match kind:
            case "redis":
                port = self.ports.redis_node(index) if index else self.ports.redis
            case "postgres":
                port = self.ports.postgres
            case "kafka":
                port = self.ports.kafka
            case "gateway":
                port = self.ports.gateway(index)
            case "functions":
                port = self.ports.functions(index)
            case "lb":
                port = self.ports.entry
            case _:
                assert_never(kind)
        return Component(name, kind, port)

    @property
    def redis_url(self) -> str:
        """Redis URL (database 0); of a cluster, its first node, a seed for cluster clients."""
        return self.redis_nodes()[self.redis_names()[0]]

    def redis_nodes(self) -> dict[str, str]:
        """Each Redis component's URL by name: ``{"redis": ...}`` or ``redis-1`` ... ``redis-6``."""
        return {
            name: f"redis://{HOST}:{self.component(name).port}/0" for name in self.redis_names()
        }

    def _cluster_ports(self) -> dict[str, int]:
        return {name: self.component(name).port for name in self.redis_names()}

    def redis_roles(self) -> dict[str, cluster.Role]:
        """Of a cluster: each node's role (master or replica of whom), as a live node sees it."""
        if self.redis_mode != "cluster":
            raise StackError("redis_roles() needs a Redis Cluster (REDIS=cluster)")
        return cluster.roles(self._cluster_ports())

    @property
    def kafka_bootstrap(self) -> str:
        """Kafka bootstrap servers."""
        return f"{HOST}:{self.ports.kafka}"

    @property
    def postgres_dsn(self) -> str:
        """DSN of the application's database, as its role."""
        return f"postgresql://chat@{HOST}:{self.ports.postgres}/chat"

    @property
    def _admin_dsn(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.ports.postgres}/postgres"

    @property
    def entry_url(self) -> str:
        """The load-balanced base URL."""
        return f"http://{HOST}:{self.ports.entry}"

    @property
    def http_url(self) -> str:
        """Base URL of the first function host (history routes)."""
        return f"http://{HOST}:{self.ports.functions(1)}"

    @property
    def jwt_secret(self) -> str:
        """A random dev secret, made once per state dir and kept."""
        path = self.state_dir / "jwt_secret"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".jwt_secret.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(secrets.token_urlsafe(32))
            tmp.chmod(0o600)
            try:
                # Two processes may race: link() never overwrites, so one value wins for both.
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        """The ``CHAT_*`` settings every gateway and function host gets (but its node id)."""
        return {
            "CHAT_ENVIRONMENT": "dev",
            "CHAT_REDIS_URL": self.redis_url,
            "CHAT_REDIS_MODE": self.redis_mode,
            # A cluster acks an accepted send once its master's replica holds it.
            "CHAT_REDIS_WAIT_REPLICAS": "1" if self.redis_mode == "cluster" else "0",
            "CHAT_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "CHAT_POSTGRES_DSN": self.postgres_dsn,
            "CHAT_DEV_AUTH": "true",
            "CHAT_JWT_SECRET": self.jwt_secret,
            "CHAT_HISTORY_URL": self.http_url,
            "CHAT_CORS_ORIGINS": ",".join(self._page_origins()),
        }

    def _page_origins(self) -> list[str]:
        """Where a browser may load the chat page from: the entry and each gateway, by name too."""
        ports = [self.ports.entry, *(self.ports.gateway(i) for i in range(1, self.gateways + 1))]
        return [f"http://{host}:{port}" for port in ports for host in (HOST, "localhost")]

    def _child_env(self, name: str) -> dict[str, str]:
        return {**os.environ, **self.env(), "CHAT_NODE_ID": name, "PYTHONUNBUFFERED": "1"}

    # ----- what runs -----

    def _record_path(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.json"

    def _record(self, name: str) -> Record | None:
        return Record.load(self._record_path(name))

    def _recorded(self) -> list[str]:
        run_dir = self.state_dir / "run"
        if not run_dir.is_dir():
            return []
        names = []
        for path in run_dir.glob("*.json"):
            try:
                kind_of(path.stem)
            except ValueError:
                continue
            names.append(path.stem)
        return names

    def components(self) -> list[str]:
        """Every component of this stack: configured, started as extra, or found running."""
        names = dict.fromkeys([*self.configured(), *self._extra, *self._recorded()])
        return sorted(names, key=_order)

    def _running(self, name: str) -> Record | None:
        record = self._record(name)
        if record is None:
            return None
        child = self._children.get(name)
        if child is not None:
            child.poll()  # reaps it if it died, so it does not linger as a zombie
        return record if alive(record.pid, record.started) else None

    def pid(self, name: str) -> int | None:
        """The pid of a running component, None when it does not run."""
        kind_of(name)
        record = self._running(name)
        return record.pid if record else None

    def endpoints(self) -> dict[str, Any]:
        """Where everything answers, per the operator contract (``.devstack/endpoints.json``)."""
        known = self.components()
        gateways = [n for n in known if kind_of(n)[0] == "gateway"]
        pids = {n: r.pid for n in known if (r := self._running(n))}
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
        path = self.state_dir / "endpoints.json"
        points = self.endpoints()
        if not points["pids"]:
            path.unlink(missing_ok=True)
            self._published = None
            return
        text = json.dumps(points, indent=2) + "\n"
        if text != self._published or not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o600)  # it holds the dev JWT secret
            tmp.replace(path)
            self._published = text

    # ----- start -----

    def start(self, components: Iterable[str] | None = None) -> None:
        """Start what is missing of ``components`` (default all) and their dependencies; wait."""
        with self._locked():
            self._clock = time.monotonic()
            self._cancel.clear()
            wanted = self._expand(components)
            self._refuse_other_redis_mode(wanted)
            started: list[str] = []
            try:
                for tier in (0, 1, 2):
                    names = [n for n in wanted if _TIER[kind_of(n)[0]] == tier]
                    started += self._start_all(names)
                    if tier == 0 and self.redis_mode == "cluster" and self._wants_redis(wanted):
                        self._await_cluster()
                    if tier == 0 and self._needs_provision(wanted, started):
                        self._provision()
            finally:
                self._publish()
            self._say(f"ready: {len(wanted)} components, {len(started)} started")

    def start_gateway(self, name: str) -> None:
        """Start one more gateway node (``gateway-3``), beside the configured ones."""
        if kind_of(name)[0] != "gateway":
            raise ValueError(f"{name!r} is not a gateway name (gateway-<n>)")
        self._extra[name] = self._default_argv(self.component(name))
        self.start([name])

    def start_function_host(self, name: str, only: list[str] | None = None) -> None:
        """Start one more function host (``functions-2``), optionally with only some functions."""
        if kind_of(name)[0] != "functions":
            raise ValueError(f"{name!r} is not a function host name (functions-<n>)")
        argv = self._default_argv(self.component(name))
        if only:
            argv += ("--only", ",".join(only))
        self._extra[name] = argv
        self.start([name])

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
        return sorted(wanted, key=_order)

    def _wants_redis(self, wanted: list[str]) -> bool:
        """True when ``wanted`` holds a Redis component of this stack."""
        return any(name in wanted for name in self.redis_names())

    def _refuse_other_redis_mode(self, wanted: list[str]) -> None:
        """Never run both kinds of Redis from one state dir: gateways would use one or the other."""
        if not self._wants_redis(wanted):
            return
        others = [
            name
            for name in self._recorded()
            if kind_of(name)[0] == "redis"
            and name not in self.redis_names()
            and self._running(name)
        ]
        if others:
            other = "standalone" if self.redis_mode == "cluster" else "cluster"
            raise StackError(
                f"{self.state_dir} runs Redis {other} ({', '.join(sorted(others, key=_order))}): "
                f"stop that stack first (make dev-stop), then start it again with "
                f"REDIS={self.redis_mode}"
            )

    def _await_cluster(self) -> None:
        """Create the Redis Cluster if its nodes never met; wait until every slot is served."""
        ports = self._cluster_ports()
        log = self.log_path("redis-cluster")
        if cluster.is_fresh(ports):
            cluster.reset(ports)
            masters = len(ports) // (1 + cluster.REPLICAS_PER_MASTER)
            self._say(
                f"redis: creating the cluster ({masters} masters, "
                f"{len(ports) - masters} replicas) with redis-cli --cluster create"
            )
            argv = cluster.create_argv(_which("redis-cli"), ports)
            code = run(argv, log=log, timeout=_CLUSTER_TIMEOUT_S)
            if code != 0:
                raise self._cluster_failure(f"redis-cli --cluster create failed with code {code}")
        deadline = time.monotonic() + _CLUSTER_TIMEOUT_S
        waited = False
        while (why := cluster.problem(ports)) is not None:
            if self._cancel.is_set():
                raise StackError("redis: start cancelled")
            if time.monotonic() >= deadline:
                raise self._cluster_failure(
                    f"the Redis Cluster is not whole after {_CLUSTER_TIMEOUT_S}s: {why}"
                )
            if not waited:
                self._say(f"redis: waiting for the cluster ({why})")
                waited = True
            time.sleep(0.2)
        self._say(
            f"redis: cluster ok, all {cluster.HASH_SLOTS} slots served, each master replicated"
        )

    def _cluster_failure(self, what: str) -> StackError:
        log = self.log_path("redis-cluster")
        dirs = ", ".join(str(self.state_dir / name) for name in self.redis_names())
        return StackError(
            f"{what}.\n--- last lines of {log} ---\n{tail(log)}\n---\n"
            f"Each node's own log is {self.logs_dir}/redis-<n>.log. What to do: if the nodes' "
            f"cluster state is damaged, stop the stack (make dev-stop) and remove {dirs} "
            f"(a new, empty cluster is created); then start again."
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
        component = self.component(name)
        record = self._record(name)
        if record is not None and alive(record.pid, record.started):
            # Running already: leave it alone, but it must answer like a fresh one.
            self._await_healthy(component, record)
            self._after_ready(component)
            return False
        if record is not None:
            self._clear_leftovers(record)
        for port in self._listens(component):
            if not port_free(port):
                raise StackError(
                    f"{name}: port {HOST}:{port} is taken by another program. Stop that "
                    f"program, or pick another block of ports with DEVSTACK_PORT_BASE=<port>."
                )
        argv, user = self._prepare(component)
        if self._cancel.is_set():
            raise StackError(f"{name}: start cancelled")
        log = self.log_path(name)
        child = spawn(argv, log=log, env=self._child_env(name), cwd=REPO, user=user)
        self._children[name] = child
        started = _started(child.pid)
        record = Record(
            name=name, pid=child.pid, started=started, port=component.port, argv=tuple(argv)
        )
        record_path = self._record_path(name)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record.save(record_path)
        self._say(f"{name}: starting on {HOST}:{component.port} (pid {child.pid})")
        self._await_healthy(component, record)
        self._after_ready(component)
        self._say(f"{name}: ready")
        return True

    def _clear_leftovers(self, record: Record) -> None:
        """A dead component may leave processes behind (PostgreSQL backends); end them."""
        deadline = time.monotonic() + 5.0
        while group_members(record.pid) and time.monotonic() < deadline:
            signal_group(record.pid, signal.SIGKILL)
            time.sleep(0.05)
        self._reap(record.name)
        self._record_path(record.name).unlink(missing_ok=True)

    def _reap(self, name: str) -> None:
        child = self._children.pop(name, None)
        if child is not None:
            with suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)

    def _await_healthy(self, component: Component, record: Record) -> None:
        probe = self._probe(component)
        timeout = _START_TIMEOUT_S[component.kind]
        deadline = time.monotonic() + timeout
        child = self._children.get(component.name)
        while not probe():
            if self._cancel.is_set():
                raise StackError(f"{component.name}: start cancelled")
            if child is not None:
                child.poll()
            if not alive(record.pid, record.started):
                code = (
                    f" with code {child.returncode}"
                    if child and child.returncode is not None
                    else ""
                )
                raise self._failure(component, f"exited{code} before answering its health check")
            if time.monotonic() >= deadline:
                raise self._failure(
                    component, f"did not answer its health check within {timeout:.0f}s"
                )
            time.sleep(0.1)

    def _failure(self, component: Component, what: str) -> StackError:
        log = self.log_path(component.name)
        hints: dict[Kind, str] = {
            "redis": "check that redis-server works (scripts/bootstrap.sh installs it)",
            "postgres": f"if the cluster is damaged, remove {self.state_dir / 'postgres'}",
            "kafka": f"if the broker's storage is damaged, remove {self.state_dir / 'kafka'}",
            "gateway": "fix the error shown above in the gateway (realtime)",
            "functions": "fix the error shown above in the function host (functions)",
            "lb": f"check the haproxy configuration {self.state_dir / 'haproxy.cfg'}",
        }
        return StackError(
            f"{component.name} {what} ({HOST}:{component.port}).\n"
            f"--- last lines of {log} ---\n{tail(log)}\n---\n"
            f"What to do: {hints[component.kind]}; then start again (what runs is kept), "
            f"or stop everything (make dev-stop / python -m devstack stop)."
        )

    def _listens(self, component: Component) -> list[int]:
        """The ports a component binds: a cluster node has its cluster bus too."""
        index = kind_of(component.name)[1]
        if component.kind == "redis" and index:
            return [component.port, self.ports.redis_bus(index)]
        return [component.port]

    def _probe(self, component: Component) -> Callable[[], bool]:
        match component.kind:
            case "redis":
                url = f"redis://{HOST}:{component.port}/0"
                return lambda: health.redis_ping(url)
            case "postgres":
                return lambda: health.postgres_ready(self._admin_dsn)
            case "kafka":
                return health.KafkaProbe(self.kafka_bootstrap)
            case "gateway" | "functions":
                url = f"http://{HOST}:{component.port}/healthz"
                return lambda: health.http_ok(url)
            case "lb":
                return lambda: health.http_ok(self.entry_url + "/healthz")
            case _:
                assert_never(component.kind)

    def _after_ready(self, component: Component) -> None:
        if component.kind == "postgres":
            self._ensure_database()

    def _needs_provision(self, wanted: list[str], started: list[str]) -> bool:
        services = self.services()
        if not all(s in wanted for s in services):
            return False
        return bool(set(started) & set(services)) or not (self.state_dir / "provisioned").exists()

    def _provision(self) -> None:
        """Migrate PostgreSQL and create Kafka topics (the chat package knows which)."""
        self._say("provision: migrating PostgreSQL, creating Kafka topics")
        log = self.log_path("provision")
        code = run(
            [sys.executable, "-m", "functions.store.provision"],
            log=log,
            timeout=180,
            env=self._child_env("provision"),
            cwd=REPO,
        )
        if code != 0:
            raise StackError(
                f"provision failed with code {code}.\n"
                f"--- last lines of {log} ---\n{tail(log)}\n---\n"
                f"What to do: fix functions.store.provision, then start again (what runs is kept)."
            )
        (self.state_dir / "provisioned").touch()
        self._say("provision: done")

    # ----- per-kind preparation -----

    def _prepare(self, component: Component) -> tuple[list[str], str | None]:
        """Make what the component needs on disk; return its command and the user to run it as."""
        match component.kind:
            case "redis":
                return self._prepare_redis(component), None
            case "postgres":
                return self._prepare_postgres(component)
            case "kafka":
                return self._prepare_kafka(component), None
            case "gateway" | "functions":
                return list(self._argv_for(component)), None
            case "lb":
                return self._prepare_lb(component), None
            case _:
                assert_never(component.kind)

    def _default_argv(self, component: Component) -> tuple[str, ...]:
        common = ("--host", HOST, "--port", str(component.port))
        if component.kind == "gateway":
            return (sys.executable, "-m", "realtime", *common)
        return (sys.executable, "-m", "functions", "host", *common)

    def _argv_for(self, component: Component) -> tuple[str, ...]:
        if component.name in self._extra:
            return self._extra[component.name]
        if component.name not in self.configured():
            # An extra node started by another process: restart it as it was started.
            record = self._record(component.name)
            if record is not None:
                return record.argv
        return self._default_argv(component)

    def _prepare_redis(self, component: Component) -> list[str]:
        # redis/ of the single server; redis-<n>/ of each cluster node, beside its nodes.conf.
        data = self.state_dir / component.name
        data.mkdir(parents=True, exist_ok=True)
        index = kind_of(component.name)[1]
        node = cluster.node_argv(bus_port=self.ports.redis_bus(index)) if index else []
        return [
            _which("redis-server"),
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
        ]  # fmt: skip

    def _prepare_postgres(self, component: Component) -> tuple[list[str], str | None]:
        bindir = postgres_bindir()
        home = self.state_dir / "postgres"
        data, sockets = home / "data", home / "socket"
        sockets.mkdir(parents=True, exist_ok=True)
        # PostgreSQL refuses root: then it runs as the postgres user, who must reach its files.
        user = "postgres" if os.geteuid() == 0 else None
        if user is not None:
            account = _account(user)
            self._grant_traverse(home, account)
            for path in (home, sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        if not (data / "PG_VERSION").exists():
            if data.exists():
                shutil.rmtree(data)  # a half-made cluster from an interrupted initdb
            self._say("postgres: creating the cluster (initdb)")
            argv = [
                str(bindir / "initdb"),
                "-D", str(data),
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ]  # fmt: skip
            if not self.durable:
                argv.append("--no-sync")
            log = self.log_path(component.name)
            code = run(argv, log=log, timeout=120, cwd=home, user=user)
            if code != 0:
                raise self._failure(component, f"initdb failed with code {code}")
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(sockets),
            # Function hosts, gateways and test clients each hold pools: more than the default 100.
            "max_connections": "200",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(component.port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv, user

    def _grant_traverse(self, path: Path, account: pwd.struct_passwd) -> None:
        """Let ``account`` reach ``path``: o+x on the parents it cannot cross, nothing more."""
        groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
        for parent in [path, *path.parents]:
            info = parent.stat()
            if info.st_uid == account.pw_uid:
                allowed = bool(info.st_mode & stat.S_IXUSR)
            elif info.st_gid in groups:
                allowed = bool(info.st_mode & stat.S_IXGRP)
            else:
                allowed = bool(info.st_mode & stat.S_IXOTH)
            if not allowed:
                parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
                self._say(
                    f"postgres: allowed others to traverse {parent} (o+x) "
                    f"so the {account.pw_name} user reaches its data"
                )

    def _ensure_database(self) -> None:
        with psycopg.connect(self._admin_dsn, autocommit=True, connect_timeout=5) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'chat'").fetchone() is None:
                conn.execute("CREATE ROLE chat LOGIN")
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'chat'").fetchone() is None:
                conn.execute("CREATE DATABASE chat OWNER chat")

    def _prepare_kafka(self, component: Component) -> list[str]:
        java = _which("java")
        if not any(self.kafka_lib.glob("kafka_2.13-*.jar")):
            raise StackError(
                f"Kafka jars missing in {self.kafka_lib}: "
                f"run scripts/bootstrap.sh (resolves them with mvn)"
            )
        home = self.state_dir / "kafka"
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        properties, log4j = home / "server.properties", home / "log4j2.properties"
        properties.write_text(
            configs.kafka_server(
                port=component.port, controller_port=self.ports.kafka_controller, data=data
            )
        )
        log4j.write_text(configs.kafka_log4j2())
        jvm = [
            java,
            *_KAFKA_JVM_FLAGS,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.kafka_lib}/*",
        ]
        if not (data / "meta.properties").exists():
            if data.exists():
                shutil.rmtree(data)  # left by an interrupted format
            self._say("kafka: formatting the broker's storage")
            cluster_id = self._kafka_cluster_id(home)
            argv = [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(properties),
            ]
            code = run(argv, log=self.log_path(component.name), timeout=120)
            if code != 0:
                raise self._failure(component, f"storage format failed with code {code}")
        # A class-data archive halves the broker's start (about 5 s to 2.5 s on 2 cores). The first
        # broker dumps one when it stops; later ones, of any state dir, map it.
        archive = self._class_archive(java)
        if archive.exists():
            cds = f"-XX:SharedArchiveFile={archive}"
        else:
            (home / "classes.jsa").unlink(missing_ok=True)
            cds = f"-XX:ArchiveClassesAtExit={home / 'classes.jsa'}"
        return [*jvm, cds, "kafka.Kafka", str(properties)]

    def _class_archive(self, java: str) -> Path:
        """The broker's class-data archive for this Java and these jars, beside the jars."""
        binary = Path(java).resolve()
        # A class-data archive only maps into a JVM of the same flags (GC, JIT).
        flags = " ".join(_KAFKA_JVM_FLAGS)
        key = hashlib.sha256(f"{binary}:{binary.stat().st_mtime_ns}:{flags}".encode())
        for jar in sorted(self.kafka_lib.glob("*.jar")):
            key.update(f"{jar.name}:{jar.stat().st_size}".encode())
        return self.kafka_lib.with_name(f"{self.kafka_lib.name}-{key.hexdigest()[:12]}.jsa")

    def _keep_class_archive(self) -> None:
        """After a clean broker stop, share the archive it dumped (the first one wins)."""
        dumped = self.state_dir / "kafka" / "classes.jsa"
        java = _find("java")
        if java is None or not dumped.exists() or dumped.stat().st_size == 0:
            return
        archive = self._class_archive(java)
        if not archive.exists():
            staging = archive.with_name(f".{archive.name}.{os.getpid()}")
            shutil.copyfile(dumped, staging)
            staging.replace(archive)
        dumped.unlink()

    @staticmethod
    def _kafka_cluster_id(home: Path) -> str:
        path = home / "cluster-id"
        if not path.exists():
            while True:
                # Kafka's format (base64 of a UUID); a leading dash would read as an option.
                value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
                if not value.startswith("-"):
                    break
            path.write_text(value)
        return path.read_text().strip()

    def _prepare_lb(self, component: Component) -> list[str]:
        haproxy = _which("haproxy")
        gateways = [
            (n, self.component(n).port) for n in self.configured() if n.startswith("gateway-")
        ]
        if not gateways:
            raise StackError("lb: no gateway to balance over: configure gateways=1 or more")
        config = self.state_dir / "haproxy.cfg"
        # A proxied connection takes two descriptors: keep maxconn within the descriptor limit.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        maxconn = (
            20000 if hard == resource.RLIM_INFINITY else max(256, min(20000, (hard - 200) // 2))
        )
        config.write_text(
            configs.haproxy(entry_port=component.port, gateways=gateways, maxconn=maxconn)
        )
        code = run(
            [haproxy, "-c", "-q", "-f", str(config)], log=self.log_path(component.name), timeout=20
        )
        if code != 0:
            raise self._failure(component, f"rejected its configuration {config}")
        return [haproxy, "-db", "-f", str(config)]

    # ----- stop and kill -----

    def stop(self, components: Iterable[str] | None = None) -> None:
        """Stop ``components`` (default: all this state dir runs): the entry first, data last."""
        self.cancel()
        with self._locked():
            self._clock = time.monotonic()
            if components is None:
                names = self.components()
            else:
                members = (member for name in components for member in self._members(name))
                names = sorted(dict.fromkeys(members), key=_order)
            try:
                for tier in (2, 1, 0):
                    batch = [n for n in names if _TIER[kind_of(n)[0]] == tier and self._record(n)]
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
        record = self._record(name)
        if record is None:
            return
        first, grace = _STOP[kind_of(name)[0]]
        was_running = alive(record.pid, record.started)
        clean = terminate(
            record.pid,
            record.started,
            first=first,
            grace=grace,
            child=self._children.pop(name, None),
        )
        self._record_path(name).unlink(missing_ok=True)
        if name == "kafka" and was_running and clean:
            self._keep_class_archive()
        if was_running:
            self._say(f"{name}: stopped")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a component's process group (a crash by default); SIGKILL waits.

        ``redis`` of a cluster stands for all its nodes; ``redis-<n>`` is one node.
        """
        members = self._members(name)
        with self._locked():
            records = [r for member in members if (r := self._running(member))]
            if not records:
                raise StackError(f"{name} is not running")
            for record in records:
                signal_group(record.pid, sig)
            if sig == signal.SIGKILL:
                for record in records:
                    child = self._children.get(record.name)
                    wait_gone(record.pid, record.started, 10.0, child)
                    self._clear_leftovers(record)
            self._publish()

    # ----- helpers -----

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One start/stop at a time per state dir, across processes (a file lock) and threads."""
        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with (self.state_dir / ".lock").open("w") as handle:
                deadline = time.monotonic() + 600
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise StackError(
                                f"another devstack command holds {handle.name}"
                            ) from None
                        time.sleep(0.2)
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _say(self, message: str) -> None:
        with self._print_lock:
            self._progress(f"[{time.monotonic() - self._clock:5.1f}s] {message}")


_KINDS: tuple[Kind, ...] = ("redis", "postgres", "kafka", "gateway", "functions", "lb")


def _order(name: str) -> tuple[int, int]:
    kind, index = kind_of(name)
    return _KINDS.index(kind), index


def _started(pid: int) -> int:
    value = start_time(pid)
    if value is None:
        # It died at once; a start time of -1 never matches, so it reads as not running.
        return -1
    return value


def _account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise StackError(
            f"there is no {user!r} user to run PostgreSQL as (it refuses root): "
            f"run scripts/bootstrap.sh (installing postgresql creates it)"
        ) from None
