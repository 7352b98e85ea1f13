"""Where each component of a local stack listens: one block of loopback ports from a base."""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass

DEFAULT_BASE = 18000
# Offsets inside a block; gateways and function hosts get ten slots each so extra nodes fit.
_ENTRY, _REDIS, _POSTGRES, _KAFKA, _KAFKA_CONTROLLER = 0, 1, 2, 3, 4
_GATEWAYS, _FUNCTIONS, SLOTS = 10, 20, 10
# The nodes of a local Redis Cluster, and their cluster bus ports (Redis' default, port + 10000,
# would land in another block or in the kernel's ephemeral range).
_REDIS_NODES, _REDIS_BUS, REDIS_NODES = 32, 48, 6
BLOCK = 64


def port_free(port: int) -> bool:
    """True when nothing listens on ``127.0.0.1:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Same option the servers use, so a port in TIME_WAIT counts as free, as it is for them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Ports:
    """The ports of one stack; gateway ``i`` listens on ``gateway_base + i - 1``."""

    entry: int
    redis: int
    postgres: int
    kafka: int
    kafka_controller: int
    gateway_base: int
    functions_base: int
    redis_node_base: int
    redis_bus_base: int

    def __post_init__(self) -> None:
        for name in ("entry", "redis", "postgres", "kafka", "kafka_controller"):
            value = getattr(self, name)
            if not 1024 <= value <= 65535:
                raise ValueError(f"Ports.{name} must be in 1024..65535, not {value}")
        for name, slots in (
            ("gateway_base", SLOTS),
            ("functions_base", SLOTS),
            ("redis_node_base", REDIS_NODES),
            ("redis_bus_base", REDIS_NODES),
        ):
            value = getattr(self, name)
            if not 1024 <= value <= 65535 - slots:
                raise ValueError(f"Ports.{name} must be in 1024..{65535 - slots}, not {value}")

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """The block of ports that starts at ``base``."""
        return cls(
            entry=base + _ENTRY,
            redis=base + _REDIS,
            postgres=base + _POSTGRES,
            kafka=base + _KAFKA,
            kafka_controller=base + _KAFKA_CONTROLLER,
            gateway_base=base + _GATEWAYS,
            functions_base=base + _FUNCTIONS,
            redis_node_base=base + _REDIS_NODES,
            redis_bus_base=base + _REDIS_BUS,
        )

    @classmethod
    def defaults(cls) -> Ports:
        """The fixed ports of ``make dev``: base ``DEVSTACK_PORT_BASE`` (default 18000)."""
        raw = os.environ.get("DEVSTACK_PORT_BASE", str(DEFAULT_BASE))
        try:
            base = int(raw)
        except ValueError:
            raise ValueError(f"DEVSTACK_PORT_BASE must be a port number, not {raw!r}") from None
        return cls.from_base(base)

    @classmethod
    def free(cls, attempts: int = 50) -> Ports:
        """A block whose ports are all free now, below the kernel's ephemeral range."""
        rng = random.SystemRandom()
        for _ in range(attempts):
            base = rng.randrange(20000, 32000 - BLOCK, BLOCK)
            if all(port_free(base + offset) for offset in range(BLOCK)):
                return cls.from_base(base)
        raise RuntimeError(f"no block of {BLOCK} free loopback ports in 20000..32000")

    def gateway(self, index: int) -> int:
        """Port of gateway node ``index`` (1-based)."""
        return self._slot(self.gateway_base, index)

    def functions(self, index: int) -> int:
        """Port of function host ``index`` (1-based)."""
        return self._slot(self.functions_base, index)

    def redis_node(self, index: int) -> int:
        """Port of Redis Cluster node ``index`` (1-based)."""
        return self._slot(self.redis_node_base, index, REDIS_NODES)

    def redis_bus(self, index: int) -> int:
        """Cluster bus port of Redis Cluster node ``index`` (1-based), where nodes gossip."""
        return self._slot(self.redis_bus_base, index, REDIS_NODES)

    def all(self) -> list[int]:
        """Every port this block may use."""
        fixed = [self.entry, self.redis, self.postgres, self.kafka, self.kafka_controller]
        slots = [
            base + i for base in (self.gateway_base, self.functions_base) for i in range(SLOTS)
        ]
        nodes = [
            base + i
            for base in (self.redis_node_base, self.redis_bus_base)
            for i in range(REDIS_NODES)
        ]
        return fixed + slots + nodes

    @staticmethod
    def _slot(base: int, index: int, slots: int = SLOTS) -> int:
        if not 1 <= index <= slots:
            raise ValueError(f"node index must be in 1..{slots}, not {index}")
        return base + index - 1
