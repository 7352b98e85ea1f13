"""Redis-stream trigger: a consumer group, ack on success, reclaim, dead letters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from redis.exceptions import ResponseError

from functions.batch import BatchResult, StreamRecord
from functions.deps import Deps
from functions.registry import Function
from functions.runtime import metrics
from functions.runtime.invoke import BatchHandler, TransientFailure, backoff_s, invoke
from functions.triggers import RedisStream

log = logging.getLogger("functions.redis_stream")

# How long one XREADGROUP blocks when the stream is idle; bounds shutdown latency too.
_IDLE_BLOCK_MS = 1000

# Runs one batch; raises TransientFailure when the whole batch failed.
Call = Callable[[Sequence[StreamRecord]], Awaitable[BatchResult]]


class RedisStreamRunner:
    """Feeds one function from one Redis stream as consumer ``consumer`` of the trigger's group."""

    def __init__(self, fn: Function, deps: Deps, consumer: str, call: Call | None = None) -> None:
        assert isinstance(fn.trigger, RedisStream)
        self.fn = fn
        self.trigger: RedisStream = fn.trigger
        self.deps = deps
        self.consumer = consumer
        self.handler: BatchHandler = fn.load()
        # Another invoker (the stream bridge calling Lambda) replaces the in-process call.
        self.call: Call = call or partial(invoke, fn, self.handler, deps=deps)
        self._stopping = asyncio.Event()
        self._next_reclaim = 0.0

    def stop(self) -> None:
        """Finish the batch in hand, then return from run()."""
        self._stopping.set()

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        try:
            await self.deps.redis.xgroup_create(
                self.trigger.stream, self.trigger.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until stop(); transient Redis errors back off and retry."""
        await self.ensure_group()
        failures = 0
        while not self._stopping.is_set():
            try:
                batch = await self._reclaim() or await self._read()
                if batch:
                    await self._process(batch)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = backoff_s(failures, base=0.2, cap=10)
                log.exception(
                    "stream consumer error; retrying in %.1fs",
                    delay,
                    extra={"function": self.fn.name, "stream": self.trigger.stream},
                )
                await asyncio.sleep(delay)

    async def _read(self) -> list[StreamRecord]:
        t = self.trigger
        reply = await self.deps.redis.xreadgroup(
            t.group, self.consumer, {t.stream: ">"}, count=t.batch_size, block=_IDLE_BLOCK_MS
        )
        records = _records(reply, attempt=1)
        if records and len(records) < t.batch_size and t.max_wait_ms > 0:
            # Give a batch a short while to fill: fewer, larger invocations under load.
            more = await self.deps.redis.xreadgroup(
                t.group,
                self.consumer,
                {t.stream: ">"},
                count=t.batch_size - len(records),
                block=t.max_wait_ms,
            )
            records += _records(more, attempt=1)
        return records

    async def _reclaim(self) -> list[StreamRecord]:
        """Take over entries another consumer held past the visibility timeout."""
        now = time.monotonic()
        if now < self._next_reclaim:
            return []
        self._next_reclaim = now + max(0.05, self.trigger.visibility_timeout_s / 4)
        t = self.trigger
        reply = await self.deps.redis.xautoclaim(
            t.stream,
            t.group,
            self.consumer,
            min_idle_time=int(t.visibility_timeout_s * 1000),
            start_id="0-0",
            count=t.batch_size,
        )
        claimed = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:
            await self.deps.redis.xack(t.stream, t.group, *deleted)
        if not claimed:
            return []
        counts = await self._delivery_counts([entry_id for entry_id, _ in claimed])
        log.info(
            "reclaimed %d stale entries",
            len(claimed),
            extra={"function": self.fn.name, "stream": t.stream, "consumer": self.consumer},
        )
        return [StreamRecord(id=i, fields=f, attempt=counts.get(i, 2)) for i, f in claimed]

    async def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        t = self.trigger
        redis: Any = self.deps.redis
        rows = await redis.xpending_range(
            t.stream,
            t.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) * 2,
            consumername=self.consumer,
        )
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}

    async def _process(self, batch: list[StreamRecord]) -> None:
        t = self.trigger
        while batch:
            expired = [r for r in batch if r.attempt > t.max_attempts]
            if expired:
                await self._dead_letter(
                    expired, {r.id: f"gave up after {r.attempt - 1} attempts" for r in expired}
                )
                batch = [r for r in batch if r.attempt <= t.max_attempts]
                if not batch:
                    return
            try:
                result = await self.call(batch)
            except TransientFailure as exc:
                result = BatchResult(failed={r.id for r in batch})
                last_error = str(exc)
            else:
                last_error = "record failed"
            done = [r.id for r in batch if r.id not in result.failed and r.id not in result.poison]
            if result.poison:
                await self._dead_letter([r for r in batch if r.id in result.poison], result.poison)
            await self._ack(done)
            metrics.RECORDS.labels(self.fn.name, "ok").inc(len(done))
            retry = [r for r in batch if r.id in result.failed]
            if not retry:
                return
            metrics.RECORDS.labels(self.fn.name, "retried").inc(len(retry))
            attempt = max(r.attempt for r in retry)
            if attempt >= t.max_attempts:
                await self._dead_letter(retry, {r.id: last_error for r in retry})
                return
            if self._stopping.is_set():
                # Leave them pending: another host reclaims them after the visibility timeout.
                return
            await asyncio.sleep(backoff_s(attempt))
            batch = await self._claim_again(retry)

    async def _claim_again(self, records: list[StreamRecord]) -> list[StreamRecord]:
        """Re-claim our own failed entries, counting a new delivery for each."""
        t = self.trigger
        redis: Any = self.deps.redis
        reply = await redis.xclaim(
            t.stream, t.group, self.consumer, min_idle_time=0, message_ids=[r.id for r in records]
        )
        claimed = [(entry_id, fields) for entry_id, fields in reply if fields is not None]
        if not claimed:
            return []
        counts = await self._delivery_counts([entry_id for entry_id, _ in claimed])
        return [StreamRecord(id=i, fields=f, attempt=counts.get(i, 2)) for i, f in claimed]

    async def _ack(self, ids: list[str]) -> None:
        if not ids:
            return
        t = self.trigger
        async with self.deps.redis.pipeline(transaction=True) as pipe:
            pipe.xack(t.stream, t.group, *ids)
            if t.delete_on_ack:
                pipe.xdel(t.stream, *ids)
            await pipe.execute()

    async def _dead_letter(self, records: list[StreamRecord], reasons: dict[str, str]) -> None:
        t = self.trigger
        log.warning(
            "dead-lettering %d records",
            len(records),
            extra={"function": self.fn.name, "stream": t.stream, "dead_letter": t.dead_letter},
        )
        async with self.deps.redis.pipeline(transaction=True) as pipe:
            for r in records:
                if t.dead_letter:
                    entry: dict[Any, Any] = dict(r.fields)
                    entry.update(
                        {
                            "_error": reasons.get(r.id, "failed"),
                            "_attempts": str(r.attempt),
                            "_source_id": r.id,
                            "_function": self.fn.name,
                        }
                    )
                    pipe.xadd(t.dead_letter, entry)
            ids = [r.id for r in records]
            pipe.xack(t.stream, t.group, *ids)
            if t.delete_on_ack:
                pipe.xdel(t.stream, *ids)
            await pipe.execute()
        metrics.DEAD_LETTERED.labels(self.fn.name).inc(len(records))
        metrics.RECORDS.labels(self.fn.name, "dead_lettered").inc(len(records))


def _records(reply: Any, attempt: int) -> list[StreamRecord]:
    records: list[StreamRecord] = []
    for _stream, entries in reply or []:
        records.extend(
            StreamRecord(id=i, fields=f, attempt=attempt) for i, f in entries if f is not None
        )
    return records
