"""What a local stack is made of: its components' names and kinds, and how a start fails."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from devstack.ports import REDIS_NODES, SLOTS

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# The backing services. With a Redis Cluster, "redis" stands for its nodes redis-1 ... redis-6.
SERVICES = ("redis", "postgres", "kafka")

Kind = Literal["redis", "postgres", "kafka", "gateway", "functions", "lb"]
KINDS: tuple[Kind, ...] = ("redis", "postgres", "kafka", "gateway", "functions", "lb")
RedisMode = Literal["standalone", "cluster"]
REDIS_MODES: tuple[RedisMode, ...] = ("standalone", "cluster")

_NODE_NAME = re.compile(r"(gateway|functions|redis)-([1-9][0-9]?)")
_NODE_KINDS: dict[str, tuple[Kind, int]] = {
    "gateway": ("gateway", SLOTS),
    "functions": ("functions", SLOTS),
    "redis": ("redis", REDIS_NODES),
}


class StackError(RuntimeError):
    """A component did not start or stop; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Component:
    """One process of the stack: its name (``gateway-2``), kind and port."""

    name: str
    kind: Kind
    port: int

    @property
    def index(self) -> int:
        """Its node index (``gateway-2``: 2); 0 for a singleton (``redis``, ``lb``)."""
        return kind_of(self.name)[1]


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


def order(name: str) -> tuple[int, int]:
    """Sort key of component names: by kind in start order, then by node index."""
    kind, index = kind_of(name)
    return KINDS.index(kind), index


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


def find_program(program: str) -> str | None:
    """Where ``program`` is, None when this machine lacks it."""
    # haproxy lives in /usr/sbin, which a normal user's PATH often lacks.
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/local/sbin")


def require_program(program: str) -> str:
    """Where ``program`` is; a StackError saying how to install it when it is missing."""
    found = find_program(program)
    if not found:
        raise StackError(f"{program} not found: run scripts/bootstrap.sh (installs it)")
    return found
