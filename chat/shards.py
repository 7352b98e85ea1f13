"""Where a key lives (the one Redis, or the Redis Cluster primary owning its slot), and running
commands there: pipelined per node, scripts by sha, redirects followed, replicas awaited.

redis-py's cluster client routes single commands and follows MOVED/ASK by itself; what it cannot
do is what the live path needs: several scripts in one round trip per node, and ``WAIT`` on the
very connection that wrote (WAIT counts the replication of that connection's own writes). So
the writers that must not lose an acked write (the send intake, the sequencing script) run
their commands through ``Shards.run``: per owner node, one pipeline on one connection, then
``WAIT <replicas> <timeout>`` on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat.settings import Settings

log = logging.getLogger("chat.shards")

# A client of the whole data set: one Redis, or the cluster (same command methods).
RedisClient = aioredis.Redis | RedisCluster

# How long commands redirected or lost keep being retried (slot map refreshed between rounds):
# longer than a failover takes (a replica serves its primary's slots 3-5 s after the primary
# died), shorter than a function's timeout, so an outage of one node is waited out rather than
# failing, and dead-lettering, the records of a batch.
_FAILOVER_S = 8.0
# How long a node's count of connected replicas is trusted.
_REPLICAS_TTL_S = 1.0
_REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)
# A node without the replicas asked for is said so at most this often.
_WARN_EVERY_S = 10.0

UNREPLICATED = Counter(
    "chat_redis_unreplicated_writes_total",
    "Writes acked while their node had fewer replicas connected than CHAT_REDIS_WAIT_REPLICAS",
)


class NotReplicated(RuntimeError):
    """A write was not confirmed by the replicas a failover needs; it may be retried."""


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script run by sha (loaded on a node when it answers NOSCRIPT)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    def call(self, keys: Sequence[str], args: Sequence[Any]) -> Command:
        """One call of the script, routed by its first key."""
        return Command(keys[0], ("EVALSHA", self.sha, len(keys), *keys, *args), self)


@dataclass(frozen=True, slots=True)
class Command:
    """A command and the key whose slot owner runs it."""

    key: str
    args: tuple[Any, ...]
    script: Script | None = None


class Shards:
    """The data set's nodes as one client sees them: one (standalone) or the cluster's primaries."""

    def __init__(self, settings: Settings, client: RedisClient) -> None:
        self.settings = settings
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self._nodes: dict[str, aioredis.Redis] = {}
        parts = urlsplit(settings.redis_url)
        # The configured node: the owner of every key when standalone.
        self._address = f"{parts.hostname}:{parts.port or 6379}"
        self._replicas: dict[str, tuple[float, int]] = {}
        self._warned = 0.0

    # ----- where keys live -----

    def slot(self, key: str) -> int:
        """The key's cluster slot (0 for every key on a standalone Redis)."""
        return key_slot(key.encode()) if self.cluster else 0

    async def owner(self, key: str) -> str:
        """``host:port`` of the node that owns ``key`` (the configured one when standalone)."""
        if not self.cluster:
            return self._address
        cluster: Any = self.client
        if not cluster.nodes_manager.slots_cache:
            await cluster.initialize()
        node = cluster.nodes_manager.get_node_from_slot(self.slot(key))
        return f"{node.host}:{node.port}"

    def url_for(self, address: str) -> str:
        """The configured URL (scheme, credentials, db) pointed at ``address``."""
        parts = urlsplit(self.settings.redis_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{address}" if auth else address
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def node(self, address: str) -> aioredis.Redis:
        """A client of one node (the client itself when standalone)."""
        if not self.cluster:
            client: aioredis.Redis = self.client  # type: ignore[assignment]
            return client
        if address not in self._nodes:
            self._nodes[address] = aioredis.from_url(
                self.url_for(address),
                decode_responses=True,
                socket_connect_timeout=5,
                socket_timeout=10,
                max_connections=64,
            )
        return self._nodes[address]

    async def refresh(self) -> None:
        """Read the slot map again (after a redirect, a failover or a lost node)."""
        if self.cluster:
            cluster: Any = self.client
            try:
                await cluster.nodes_manager.initialize()
            except Exception:
                log.warning("could not refresh the cluster's slot map", exc_info=True)

    async def aclose(self) -> None:
        """Close the per-node clients (not the shared client)."""
        nodes, self._nodes = self._nodes, {}
        for client in nodes.values():
            await client.aclose()

    # ----- running commands -----

    async def run(
        self,
        commands: Sequence[Command],
        wait_replicas: int = 0,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run ``commands`` (in order per node), then WAIT for ``wait_replicas`` on each node.

        Returns each command's reply, in the given order; a command error raises (or, with
        ``return_exceptions``, takes that command's place: a node that failed over fails only
        its own commands). Commands redirected (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) or on a lost
        connection are retried on the slot's owner after a slot-map refresh: callers only send
        commands that are safe to repeat (idempotent, or deduplicated downstream). A node with
        replicas that did not confirm the writes within ``redis_wait_timeout_ms`` fails its
        commands with ``NotReplicated``.
        """
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        deadline = time.monotonic() + _FAILOVER_S
        attempt = 0
        while True:
            by_node: dict[str, list[int]] = {}
            for i in todo:
                by_node.setdefault(await self.owner(commands[i].key), []).append(i)
            results = await asyncio.gather(
                *(
                    self._run_on(address, [commands[i] for i in idx], wait_replicas)
                    for address, idx in by_node.items()
                ),
                return_exceptions=True,
            )
            todo = []
            for idx, result in zip(by_node.values(), results, strict=True):
                per_command = result if isinstance(result, list) else [result] * len(idx)
                for i, reply in zip(idx, per_command, strict=True):
                    replies[i] = reply
                    if isinstance(reply, (*_LOST, *_REDIRECTS)):
                        todo.append(i)
            if not todo or time.monotonic() >= deadline:
                break
            todo.sort()
            await self.refresh()
            await asyncio.sleep(min(1.0, 0.05 * 2**attempt, max(0.0, deadline - time.monotonic())))
            attempt += 1
        if not return_exceptions:
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
        return replies

    async def _run_on(self, address: str, commands: list[Command], wait_replicas: int) -> list[Any]:
        client = self.node(address)
        replies = await self._pipeline(client, commands, wait_replicas)
        missing = {
            c.script.sha: c.script
            for c, r in zip(commands, replies, strict=False)
            if isinstance(r, NoScriptError) and c.script is not None
        }
        if missing:
            # A node that never ran the script (new, restarted, promoted): load it, run again
            # what it refused (a refused call did nothing).
            for script in missing.values():
                await client.script_load(script.source)
            again = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            redo = await self._pipeline(client, [commands[i] for i in again], wait_replicas)
            for i, reply in zip(again, redo, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(
        self, client: aioredis.Redis, commands: list[Command], wait_replicas: int
    ) -> list[Any]:
        known = self._known_replicas(client) if wait_replicas else None
        if known is not None and known < wait_replicas:
            # Known short of replicas: do not wait out the timeout on every write.
            replies: list[Any] = await self._pipeline(client, commands, 0)
            self._unreplicated(len(commands), known, wait_replicas)
            return replies
        async with client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command.args)
            if wait_replicas:
                pipe.execute_command("WAIT", wait_replicas, self.settings.redis_wait_timeout_ms)
            replies = await pipe.execute(raise_on_error=False)
        if not wait_replicas:
            return replies
        acked = replies.pop()
        if not isinstance(acked, BaseException) and int(acked) >= wait_replicas:
            return replies
        if any(isinstance(r, BaseException) for r in replies):
            return replies  # the caller retries or raises those; WAIT is moot
        connected = await self._connected_replicas(client)
        if connected >= wait_replicas:
            raise NotReplicated(
                f"{acked} of {wait_replicas} replicas confirmed within "
                f"{self.settings.redis_wait_timeout_ms} ms; retry"
            )
        # Fewer replicas than wanted exist (a failover just promoted this node's only one):
        # none could be promoted with less, so the primary's write is the best there is.
        self._unreplicated(len(commands), connected, wait_replicas)
        return replies

    def _unreplicated(self, count: int, connected: int, wanted: int) -> None:
        UNREPLICATED.inc(count)
        if time.monotonic() - self._warned > _WARN_EVERY_S:
            self._warned = time.monotonic()
            log.warning(
                "a Redis node has %d of %d replicas: writes are acked unreplicated",
                connected,
                wanted,
            )

    def _known_replicas(self, client: aioredis.Redis) -> int | None:
        """The node's replica count read within the last ``_REPLICAS_TTL_S``, else None."""
        cached = self._replicas.get(str(id(client)))
        if cached is not None and time.monotonic() - cached[0] < _REPLICAS_TTL_S:
            return cached[1]
        return None

    async def _connected_replicas(self, client: aioredis.Redis) -> int:
        known = self._known_replicas(client)
        if known is not None:
            return known
        info: dict[str, Any] = await client.info("replication")
        count = int(info.get("connected_slaves", 0))
        self._replicas[str(id(client))] = (time.monotonic(), count)
        return count


__all__ = ["Command", "NotReplicated", "RedisClient", "ResponseError", "Script", "Shards"]
