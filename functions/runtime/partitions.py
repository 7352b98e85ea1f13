"""Sharing a partitioned stream's partitions among the live hosts, one consumer per partition.

Each host heartbeats itself into the trigger's member set; the live members, sorted, divide the
partitions (partition ``i`` belongs to member ``i mod M``). A host runs one ``RedisStreamRunner``
per partition it holds the lease of: the lease (a key in the partition's slot, set with an
expiry and renewed) is what makes it the partition's only consumer, so the partition's entries,
and with them a room's sends, are sequenced in stream order.

- A host joining: the others see it among the members, stop the partitions now its (finishing
  the batch in hand and what is settling, bounded by ``handover_s``), release their leases; it
  takes them.
- A host dying: its member entry and leases expire after ``lease_s``; the others take its
  partitions and, first, every entry its group still held (in entry order).
- A host stopping: finishes, releases its leases and leaves the member set, so the others take
  over at once.

A host that lost contact with Redis past its lease stops its runners (its entries are handed
back or reclaimed); one stalled past its lease may still finish a batch it was in: the dedup
records keep that from making a duplicate, only the order of two sends may swap then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from chat import names
from chat.lua import Signature
from chat.shards import Script
from functions.deps import Deps
from functions.registry import Function
from functions.runtime.invoke import pause
from functions.runtime.redis_stream import RedisStreamRunner
from functions.triggers import RedisStream, StreamPartition

log = logging.getLogger("functions.partitions")

# Take or renew a lease: it is ours if free or already ours.
TAKE = Signature(keys=("lease",), args=("me", "ttl_ms"))
_TAKE = TAKE.script("""
local owner = redis.call('GET', lease)
if owner == false or owner == me then
  redis.call('SET', lease, me, 'PX', ttl_ms)
  return 1
end
return 0
""")
# Give a lease up if it is still ours.
RELEASE = Signature(keys=("lease",), args=("me",))
_RELEASE = RELEASE.script("""
if redis.call('GET', lease) == me then
  return redis.call('DEL', lease)
end
return 0
""")
# Heartbeat into the member set, drop the expired, list the live.
MEMBERS = Signature(keys=("members",), args=("me", "now", "ttl_ms"))
_MEMBERS = MEMBERS.script("""
local at, ttl = tonumber(now), tonumber(ttl_ms)
redis.call('ZADD', members, at + ttl, me)
redis.call('ZREMRANGEBYSCORE', members, '-inf', at)
redis.call('PEXPIRE', members, 10 * ttl)
return redis.call('ZRANGEBYSCORE', members, at, '+inf')
""")

RunnerFactory = Callable[[StreamPartition, bool], RedisStreamRunner]


def assignment(members: list[str], partitions: int, me: str) -> set[int]:
    """The partitions ``me`` should hold among ``members`` (sorted, round robin)."""
    ordered = sorted(set(members) | {me})
    at = ordered.index(me)
    return {i for i in range(partitions) if i % len(ordered) == at}


class PartitionedRunner:
    """Runs one stream runner per partition this host holds the lease of."""

    # A dead host's partitions are taken over this long after its last renewal.
    LEASE_S = 5.0

    def __init__(
        self,
        fn: Function,
        deps: Deps,
        consumer: str,
        factory: RunnerFactory | None = None,
        lease_s: float = LEASE_S,
        handover_s: float = 10.0,
    ) -> None:
        assert isinstance(fn.trigger, RedisStream) and fn.trigger.partitioned
        self.fn = fn
        self.trigger: RedisStream = fn.trigger
        self.deps = deps
        self.consumer = consumer
        self.partitions = self.trigger.partitions(deps.settings.inbound_partitions)
        self.members_key = names.partition_members(self.trigger.stream)
        self.lease_ms = int(lease_s * 1000)
        self.handover_s = handover_s
        self._factory = factory or self._runner
        self._running: dict[int, tuple[RedisStreamRunner, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()

    def _runner(self, partition: StreamPartition, takeover: bool) -> RedisStreamRunner:
        return RedisStreamRunner(
            self.fn, self.deps, self.consumer, partition=partition, takeover=takeover
        )

    @property
    def held(self) -> list[int]:
        """The partitions this host consumes now."""
        return sorted(self._running)

    def stop(self) -> None:
        """Finish every partition's batch in hand, release the leases, then return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        """Balance and consume until stop()."""
        tick = self.lease_ms / 1000 / 4
        try:
            while not self._stopping.is_set():
                try:
                    await self._balance()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning(
                        "partition balance failed; retrying",
                        exc_info=True,
                        extra={"function": self.fn.name, "consumer": self.consumer},
                    )
                await pause(self._stopping, tick)
        finally:
            await self._stop_all()

    async def _balance(self) -> None:
        started = time.monotonic()
        keys, args = MEMBERS.order(
            keys={"members": self.members_key},
            args={"me": self.consumer, "now": int(time.time() * 1000), "ttl_ms": self.lease_ms},
        )
        members: list[str] = await self._run(_MEMBERS, keys, args)
        wanted = assignment(members, len(self.partitions), self.consumer)
        for index in list(self._running):
            task = self._running[index][1]
            if task.done():
                self._forget(index, task)
                continue
            if not await self._take(self.partitions[index].lease):
                log.warning(
                    "lost the lease of partition %d; stopping it",
                    index,
                    extra={"function": self.fn.name, "consumer": self.consumer},
                )
                task.cancel()
                continue
            if index not in wanted:
                log.info(
                    "handing partition %d over",
                    index,
                    extra={"function": self.fn.name, "consumer": self.consumer},
                )
                asyncio.get_running_loop().create_task(self._hand_over(index))
        if time.monotonic() - started > self.lease_ms / 1000:
            return  # too slow to trust the leases just renewed; try again next tick
        for index in sorted(wanted - set(self._running)):
            partition = self.partitions[index]
            if await self._take(partition.lease):
                self._start(index, partition)

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        # Through Shards like the live path's scripts: each of these is safe to repeat, so a
        # redirect or a lost connection is retried on the slot's owner; the lease decides.
        (reply,) = await self.deps.shards.run([script.call(keys, args)])
        return reply

    async def _take(self, lease: str) -> bool:
        """Take or renew ``lease``: whether it is ours now."""
        keys, args = TAKE.order(
            keys={"lease": lease}, args={"me": self.consumer, "ttl_ms": self.lease_ms}
        )
        return bool(int(await self._run(_TAKE, keys, args)))

    async def _release(self, lease: str) -> None:
        keys, args = RELEASE.order(keys={"lease": lease}, args={"me": self.consumer})
        await self._run(_RELEASE, keys, args)

    def _start(self, index: int, partition: StreamPartition) -> None:
        runner = self._factory(partition, True)
        task = asyncio.get_running_loop().create_task(
            runner.run(), name=f"{self.fn.name}-partition-{index}"
        )
        self._running[index] = (runner, task)
        log.info(
            "consuming partition %d",
            index,
            extra={"function": self.fn.name, "consumer": self.consumer},
        )

    def _forget(self, index: int, task: asyncio.Task[None]) -> None:
        self._running.pop(index, None)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "partition %d runner ended: %r",
                index,
                task.exception(),
                extra={"function": self.fn.name},
            )

    async def _hand_over(self, index: int) -> None:
        entry = self._running.get(index)
        if entry is None:
            return
        runner, task = entry
        runner.stop()
        _, pending = await asyncio.wait([task], timeout=self.handover_s)
        for t in pending:
            t.cancel()  # hands back what it holds
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._running.get(index) == entry:
            del self._running[index]
        with contextlib.suppress(Exception):
            await self._release(self.partitions[index].lease)

    async def _stop_all(self) -> None:
        for runner, _ in self._running.values():
            runner.stop()
        tasks = [task for _, task in self._running.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        held, self._running = list(self._running), {}
        with contextlib.suppress(Exception):
            for index in held:
                await self._release(self.partitions[index].lease)
            await self.deps.redis.zrem(self.members_key, self.consumer)
