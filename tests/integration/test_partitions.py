"""Partition ownership on real Redis: one consumer per partition while hosts come and go."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence

from chat import names
from functions.batch import BatchResult, StreamRecord
from functions.deps import Deps
from functions.registry import Function
from functions.runtime.partitions import PartitionedRunner, assignment
from functions.runtime.redis_stream import RedisStreamRunner
from functions.triggers import RedisStream, StreamPartition
from tests.support import until

PARTITIONS = 4


class Recorder:
    """A stand-in for the handler: records which consumer saw which entry, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str]] = []
        self.stall: set[str] = set()

    def factory(self, deps: Deps, fn: Function, consumer: str):  # type: ignore[no-untyped-def]
        def build(partition: StreamPartition, takeover: bool) -> RedisStreamRunner:
            async def call(batch: Sequence[StreamRecord]) -> BatchResult:
                if consumer in self.stall:
                    await asyncio.Event().wait()  # a host that hangs (then dies)
                self.seen += [(consumer, partition.index, r.fields["n"]) for r in batch]
                return BatchResult()

            return RedisStreamRunner(
                fn, deps, consumer, call=call, partition=partition, takeover=takeover
            )

        return build


def _function(test_id: str) -> Function:
    return Function(
        name="probe",
        handler="tests.integration.test_partitions:Recorder",
        trigger=RedisStream(
            stream=f"test:parts:{test_id}",
            group="probe",
            batch_size=10,
            max_wait_ms=1,
            visibility_timeout_s=30.0,  # far beyond the test: only the lease hands entries over
            partitioned=True,
        ),
    )


def _runner(fn: Function, deps: Deps, consumer: str, rec: Recorder) -> PartitionedRunner:
    return PartitionedRunner(
        fn, deps, consumer, factory=rec.factory(deps, fn, consumer), lease_s=1.0, handover_s=3.0
    )


def test_the_live_members_share_the_partitions_out_evenly() -> None:
    assert assignment(["a"], 4, "a") == {0, 1, 2, 3}
    assert assignment(["a", "b"], 4, "b") == {1, 3}
    shares = [assignment(["c", "a", "b"], 8, m) for m in "abc"]
    assert set().union(*shares) == set(range(8)) and sum(map(len, shares)) == 8
    assert sorted(map(len, shares)) == [2, 3, 3]


async def test_hosts_coming_and_going_keep_one_consumer_per_partition_in_order(
    deps: Deps, test_id: str
) -> None:
    deps = Deps(dataclasses.replace(deps.settings, inbound_partitions=PARTITIONS))
    fn = _function(test_id)
    assert isinstance(fn.trigger, RedisStream)
    streams = [p.stream for p in fn.trigger.partitions(PARTITIONS)]
    rec = Recorder()
    a, b = _runner(fn, deps, "a", rec), _runner(fn, deps, "b", rec)
    tasks = {"a": asyncio.create_task(a.run())}
    sent = 0

    async def send(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            await deps.redis.xadd(streams[sent % PARTITIONS], {"n": str(sent)})
            sent += 1

    async def all_seen() -> bool:
        return {int(n) for _, _, n in rec.seen} >= set(range(sent))

    try:
        # GIVEN one host: it holds every partition and handles everything
        await until(lambda: _holds(a, PARTITIONS), "a holding every partition", 10)
        await send(20)
        await until(all_seen, "a handling the first entries", 10)

        # WHEN a second host joins: the partitions are split, each held by one of them
        tasks["b"] = asyncio.create_task(b.run())
        await until(lambda: _split(a, b), "the partitions split between a and b", 15)
        await send(20)
        await until(all_seen, "both handling entries", 10)
        assert {c for c, _, n in rec.seen if int(n) >= 20} == {"a", "b"}

        # WHEN b stops gracefully: a takes its partitions at once
        b.stop()
        await asyncio.wait_for(tasks.pop("b"), 10)
        await until(lambda: _holds(a, PARTITIONS), "a taking b's partitions back", 5)

        # WHEN a hangs mid-batch and dies without releasing anything, and c is there
        c = _runner(fn, deps, "c", rec)
        rec.stall.add("a")
        await send(8)  # a reads these and never finishes them
        await asyncio.sleep(0.5)
        a._stop_all = _nothing  # type: ignore[method-assign]
        tasks.pop("a").cancel()
        for runner, task in list(a._running.values()):
            runner._hand_back = _nothing_with  # type: ignore[method-assign,assignment]
            task.cancel()
        tasks["c"] = asyncio.create_task(c.run())
        # THEN c takes over every partition once a's leases expire, and handles what a held
        await until(lambda: _holds(c, PARTITIONS), "c taking a's partitions", 10)
        await send(4)
        await until(all_seen, "c handling a's entries and new ones", 10)
    finally:
        for host in (a, b):
            host.stop()
        for task in tasks.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await deps.redis.delete(*streams, names.partition_members(fn.trigger.stream))
        await deps.aclose()

    # AND per partition, entries were handled in stream order (a retry may repeat the tail)
    for p in range(PARTITIONS):
        ns = [int(n) for _, part, n in rec.seen if part == p]
        firsts = sorted(set(ns), key=ns.index)
        assert firsts == sorted(firsts), (p, ns)


async def _nothing() -> None:
    return None


async def _nothing_with(_: object) -> None:
    return None


async def _holds(runner: PartitionedRunner, count: int) -> bool:
    return len(runner.held) == count


async def _split(a: PartitionedRunner, b: PartitionedRunner) -> bool:
    return len(a.held) == len(b.held) == PARTITIONS // 2 and set(a.held) | set(b.held) == set(
        range(PARTITIONS)
    )
