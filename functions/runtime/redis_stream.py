"""Redis-stream trigger: a consumer group, ack on success, visibility timeout, dead letters.

Semantics, close to an SQS event source mapping:

- an entry read by a runner is invisible to the others while the runner holds it; a heartbeat
  keeps it so while the handler runs, however long that is (bounded by the function timeout);
- an entry whose holder died or stalled for ``visibility_timeout_s`` is reclaimed (XAUTOCLAIM)
  by another runner, which counts a new delivery;
- failures follow ``functions.runtime.policy``: a batch the handler raises on is bisected until
  the failing entry is alone; ``failed`` entries are retried with backoff, each retry
  re-claiming them (a delivery counted); ``poison`` entries and entries out of attempts are
  dead-lettered with their error and attempt count, atomically with their ack and exactly
  once; past the dead-letter cap the runner reads nothing for its cool-down and hands back
  what it did not finish;
- success acks (and deletes) the entry;
- a handler may return a ``settle`` future (the message function does: Kafka's confirmation);
  the entries it succeeded on are acked only once it resolves, while the runner goes on with
  later batches, holding at most ``max_settling`` such entries (then it waits for the oldest);
- a runner asked to stop finishes its batch, waits for what is settling, and hands back what it
  could not finish, so another host takes it over at once instead of after the visibility
  timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

from redis.exceptions import ResponseError

from chat import dead_letters
from chat.lua import Signature
from functions.batch import BatchResult, StreamRecord
from functions.deps import Deps
from functions.registry import Function
from functions.runtime import metrics
from functions.runtime.invoke import BatchHandler, backoff_s, invoke, pause
from functions.runtime.policy import Limits, Policy
from functions.triggers import RedisStream, StreamPartition

log = logging.getLogger("functions.redis_stream")

# How long one XREADGROUP blocks when the stream is idle; bounds shutdown latency too.
_IDLE_BLOCK_MS = 1000
# XAUTOCLAIM calls per reclaim pass: each scans at most 10 x COUNT pending entries, so a long
# list of entries held by live runners takes a few passes to walk (the cursor is kept).
_RECLAIM_STEPS = 4
# Bound on handing entries back when a stop is forced; the visibility timeout covers failure.
_HAND_BACK_TIMEOUT_S = 2.0

# Runs one batch; raises TransientFailure when the whole batch failed.
Call = Callable[[Sequence[StreamRecord]], Awaitable[BatchResult]]

# Keep entries this consumer still holds invisible to others (or hand them back): reset their
# idle time to ``idle_ms`` without counting a delivery (XCLAIM JUSTID). An entry another
# consumer has reclaimed meanwhile is left alone; the reply lists the entries still held.
# The entries' ids come after the arguments.
TOUCH = Signature(keys=("stream",), args=("group", "consumer", "idle_ms"))
_TOUCH = (
    TOUCH.preamble()
    + f"""
local held = {{}}
for i = {len(TOUCH.args) + 1}, #ARGV do
  local id = ARGV[i]
  local row = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if row and row[2] == consumer then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'IDLE', idle_ms, 'JUSTID')
    held[#held + 1] = id
  end
end
return held
"""
)

# Dead-letter entries exactly once: an entry is copied to the dead-letter stream only by the
# call whose XACK removed it from the pending list, so two runners that both held it (one of
# them stalled past the visibility timeout) never dead-letter it twice.
# The dead-letter stream is left out when the trigger declares none; ``delete`` is '1'/'0';
# after the arguments come, per entry: id, 2n, field1, value1, ... fieldn, valuen.
DEAD_LETTER = Signature(keys=("stream", "dead_stream"), args=("group", "delete"))
_DEAD_LETTER = (
    DEAD_LETTER.preamble()
    + f"""
local count, i = 0, {len(DEAD_LETTER.args) + 1}
while i <= #ARGV do
  local id, width = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('XACK', stream, group, id) == 1 then
    if dead_stream then
      redis.call('XADD', dead_stream, '*', unpack(ARGV, i + 2, i + 1 + width))
    end
    if delete == '1' then
      redis.call('XDEL', stream, id)
    end
    count = count + 1
  end
  i = i + 2 + width
end
return count
"""
)


def dead_letter_entry(
    record: StreamRecord, reason: str, function: str, attempts: int | None = None
) -> dict[str, str]:
    """The dead-letter stream entry for ``record``: its fields plus why and how often it failed."""
    count = record.attempt if attempts is None else attempts
    return dead_letters.stream_entry(record.fields, record.id, reason, count, function)


def dead_letter_args(entries: Iterable[tuple[str, dict[str, str]]]) -> list[str]:
    """The per-entry ARGV tail of the dead-letter script: id, width, then field/value pairs."""
    args: list[str] = []
    for entry_id, fields in entries:
        args += [entry_id, str(2 * len(fields))]
        for key, value in fields.items():
            args += [key, value]
    return args


class RedisStreamRunner:
    """Feeds one function from one Redis stream as consumer ``consumer`` of the trigger's group.

    One runner runs one batch at a time: a function's concurrency is its number of runners.
    """

    def __init__(
        self,
        fn: Function,
        deps: Deps,
        consumer: str,
        call: Call | None = None,
        partition: StreamPartition | None = None,
        takeover: bool = False,
    ) -> None:
        assert isinstance(fn.trigger, RedisStream)
        self.fn = fn
        self.trigger: RedisStream = fn.trigger
        if partition is None:
            partition = self.trigger.partitions(1)[0]
        self.partition = partition
        self.stream = partition.stream
        self.dead_letter_stream = partition.dead_letter
        self.deps = deps
        self.consumer = consumer
        # The partition's lease was just taken: whatever its group still holds belongs to an
        # earlier owner, taken over at once (in entry order) rather than after the timeout.
        self._takeover = takeover
        self._stopping = asyncio.Event()
        # Another invoker (the stream bridge calling Lambda) replaces the in-process call.
        if call is None:
            handler: BatchHandler = fn.load()
            call = partial(invoke, fn, handler, deps=deps)
        self.call: Call = call
        self.policy: Policy[StreamRecord] = Policy(
            fn.name, Limits.of(self.trigger), call, self, self._stopping, available=deps.available
        )
        self._next_reclaim = 0.0
        self._reclaim_cursor = "0-0"
        # Entry ids this runner holds: in a batch, or handled and waiting for their settle.
        self._held: set[str] = set()
        self._settling: deque[tuple[list[str], asyncio.Future[None]]] = deque()
        self._settling_count = 0
        self._settled = asyncio.Event()

    @property
    def visibility_ms(self) -> int:
        """How long an entry may go untouched before another runner may take it."""
        return int(self.trigger.visibility_timeout_s * 1000)

    def stop(self) -> None:
        """Finish the batch in hand, then return from run()."""
        self._stopping.set()

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        try:
            await self.deps.redis.xgroup_create(
                self.stream, self.trigger.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until stop(); transient Redis errors back off and retry."""
        heartbeat = asyncio.create_task(self._keep_invisible(self._held), name="visibility")
        settler = asyncio.create_task(self._settle_forever(), name="settle")
        try:
            await self._consume()
            # Stopping: what is settling is acked once Kafka confirms it; a forced stop
            # (cancellation past the host's grace period) hands it back instead.
            while self._settling:
                self._settled.clear()
                await self._settled.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._hand_back(self._held), timeout=_HAND_BACK_TIMEOUT_S)
            raise
        finally:
            for task in (settler, heartbeat):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _consume(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if failures or not self._next_reclaim:
                    await self.ensure_group()
                await self._room_to_settle()
                if self.policy.cap.tripped:
                    await self._cool_down()
                    continue
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
                    extra={"function": self.fn.name, "stream": self.stream},
                )
                await pause(self._stopping, delay)

    async def _room_to_settle(self) -> None:
        """Wait while ``max_settling`` entries are handled but unsettled (Kafka is slow or down)."""
        if self._settling_count < self.trigger.max_settling:
            return
        log.warning(
            "%d entries wait for their settle; reading no more until the oldest settle",
            self._settling_count,
            extra={"function": self.fn.name, "stream": self.stream},
        )
        while self._settling_count >= self.trigger.max_settling and not self._stopping.is_set():
            self._settled.clear()
            await pause(self._settled, _IDLE_BLOCK_MS / 1000)

    async def _cool_down(self) -> None:
        """Read nothing while the dead-letter cap holds consuming stopped (or until stop())."""
        await pause(self._stopping, min(self.policy.cap.remaining_s(), 5.0) or 0.01)

    def _add_settling(self, ids: list[str], settle: asyncio.Future[None]) -> None:
        self._settling.append((ids, settle))
        self._settling_count += len(ids)
        metrics.SETTLING.labels(self.fn.name).set(self._settling_count)

    async def _settle_forever(self) -> None:
        """Ack handled entries, oldest first, once their settle resolves."""
        failures = 0
        while True:
            if not self._settling:
                self._settled.clear()
                await self._settled.wait()
                continue
            ids, settle = self._settling[0]
            try:
                await asyncio.shield(settle)
                await self._ack(ids, self._held)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Unacked entries stay held (heartbeated): retry the ack, never lose them.
                failures += 1
                log.warning(
                    "could not ack %d settled entries; retrying",
                    len(ids),
                    exc_info=True,
                    extra={"function": self.fn.name, "stream": self.stream},
                )
                await asyncio.sleep(backoff_s(failures, base=0.2, cap=5))
                continue
            failures = 0
            self._settling.popleft()
            self._settling_count -= len(ids)
            metrics.SETTLING.labels(self.fn.name).set(self._settling_count)
            metrics.RECORDS.labels(self.fn.name, "ok").inc(len(ids))
            self._settled.set()

    async def _read(self) -> list[StreamRecord]:
        t = self.trigger
        reply = await self.deps.redis.xreadgroup(
            t.group, self.consumer, {self.stream: ">"}, count=t.batch_size, block=_IDLE_BLOCK_MS
        )
        records = _records(reply, attempt=1)
        if records and len(records) < t.batch_size and t.max_wait_ms > 0:
            # Give a batch a short while to fill: fewer, larger invocations under load.
            more = await self.deps.redis.xreadgroup(
                t.group,
                self.consumer,
                {self.stream: ">"},
                count=t.batch_size - len(records),
                block=t.max_wait_ms,
            )
            records += _records(more, attempt=1)
        return records

    async def _reclaim(self) -> list[StreamRecord]:
        """Take over entries another consumer held past the visibility timeout."""
        now = time.monotonic()
        if now < self._next_reclaim and not self._takeover:
            return []
        self._next_reclaim = now + max(0.05, self.trigger.visibility_timeout_s / 4)
        t = self.trigger
        claimed: list[tuple[str, dict[str, str]]] = []
        for _ in range(_RECLAIM_STEPS):
            reply = await self.deps.redis.xautoclaim(
                self.stream,
                t.group,
                self.consumer,
                min_idle_time=0 if self._takeover else self.visibility_ms,
                start_id=self._reclaim_cursor,
                count=t.batch_size - len(claimed),
            )
            self._reclaim_cursor = str(reply[0])
            # Redis 7 drops entries deleted from the stream from the pending list itself and
            # reports them in reply[2]; nothing is left to process or ack for those.
            claimed += [(i, f) for i, f in reply[1] if i is not None and f is not None]
            if self._reclaim_cursor == "0-0" or len(claimed) >= t.batch_size:
                break
        if self._reclaim_cursor == "0-0":
            self._takeover = False  # the earlier owner's entries are all in hand
        if not claimed:
            return []
        counts = await self._delivery_counts([entry_id for entry_id, _ in claimed])
        log.info(
            "reclaimed %d entries held past the visibility timeout",
            len(claimed),
            extra={"function": self.fn.name, "stream": self.stream, "consumer": self.consumer},
        )
        metrics.RECORDS.labels(self.fn.name, "reclaimed").inc(len(claimed))
        return [StreamRecord(id=i, fields=f, attempt=counts.get(i, 2)) for i, f in claimed]

    async def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        t = self.trigger
        redis: Any = self.deps.redis
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.stream, t.group, min=entry_id, max=entry_id, count=1)
            replies = await pipe.execute()
        return {row["message_id"]: int(row["times_delivered"]) for rows in replies for row in rows}

    async def _process(self, batch: list[StreamRecord]) -> None:
        # A forced stop cancels this; run() then hands every held entry back at once.
        self._held.update(r.id for r in batch)
        unfinished = await self.policy.run(batch)
        # Stopping, or stopped by the dead-letter cap: another consumer (or this one after
        # its cool-down) takes these over at once instead of after the visibility timeout.
        await self._hand_back(unfinished & self._held)

    # ----- the policy's sink -----

    def owned(self, records: list[StreamRecord]) -> list[StreamRecord]:
        """The records this runner still holds (another consumer may have reclaimed some)."""
        return [r for r in records if r.id in self._held]

    async def done(self, records: list[StreamRecord], settle: asyncio.Future[None] | None) -> None:
        """Ack ``records``, or once ``settle`` resolves when the handler returned one."""
        ids = [r.id for r in records]
        if settle is not None:
            self._add_settling(ids, settle)
            self._settled.set()
        else:
            await self._ack(ids, self._held)
            metrics.RECORDS.labels(self.fn.name, "ok").inc(len(ids))

    async def dead_letter(self, records: list[StreamRecord], reasons: dict[str, str]) -> bool:
        """Dead-letter ``records`` atomically with their ack, exactly once."""
        await self._dead_letter(records, reasons, self._held)
        return True

    async def again(self, records: list[StreamRecord]) -> list[StreamRecord]:
        """Re-claim entries for a retry, counting a delivery; those still ours."""
        return await self._claim_again(records, self._held)

    async def _keep_invisible(self, held: set[str]) -> None:
        """Reset the idle time of the held entries often enough that nobody reclaims them."""
        every = max(0.05, self.trigger.visibility_timeout_s / 3)
        while True:
            await asyncio.sleep(every)
            if not held:
                continue
            snapshot = set(held)
            try:
                kept = await self._touch(snapshot, idle_ms=0)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A missed heartbeat only risks a duplicate delivery, which handlers absorb.
                log.warning("visibility heartbeat failed", extra={"function": self.fn.name})
                continue
            # Entries acked during the call are no longer held and are not lost.
            lost = (snapshot - set(kept)) & held
            if lost:
                held.difference_update(lost)
                log.warning(
                    "%d entries were reclaimed by another consumer while in hand",
                    len(lost),
                    extra={"function": self.fn.name, "consumer": self.consumer},
                )

    async def _touch(self, ids: set[str], idle_ms: int) -> list[str]:
        """Set the idle time of the held ones of ``ids``; those still held."""
        keys, args = TOUCH.order(
            keys={"stream": self.stream},
            args={"group": self.trigger.group, "consumer": self.consumer, "idle_ms": idle_ms},
        )
        held: list[str] = await self.deps.script(_TOUCH)(keys=keys, args=[*args, *sorted(ids)])
        return held

    async def _hand_back(self, ids: set[str]) -> None:
        """Make these held entries reclaimable at once (their idle time set to the timeout)."""
        ids = set(ids)
        if not ids:
            return
        await self._touch(ids, idle_ms=self.visibility_ms)
        log.info(
            "handed back %d entries",
            len(ids),
            extra={"function": self.fn.name, "consumer": self.consumer},
        )
        self._held.difference_update(ids)

    async def _claim_again(self, records: list[StreamRecord], held: set[str]) -> list[StreamRecord]:
        """Re-claim our own failed entries, counting a new delivery for each."""
        t = self.trigger
        redis: Any = self.deps.redis
        # Entries another consumer reclaimed meanwhile are its to finish now.
        ids = [r.id for r in records if r.id in held]
        if not ids:
            return []
        reply = await redis.xclaim(
            self.stream, t.group, self.consumer, min_idle_time=0, message_ids=ids
        )
        claimed = [(i, f) for i, f in reply if i is not None and f is not None]
        held.difference_update(set(ids) - {i for i, _ in claimed})
        if not claimed:
            return []
        counts = await self._delivery_counts([entry_id for entry_id, _ in claimed])
        return [StreamRecord(id=i, fields=f, attempt=counts.get(i, 2)) for i, f in claimed]

    async def _ack(self, ids: list[str], held: set[str]) -> None:
        if not ids:
            return
        t = self.trigger
        async with self.deps.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, t.group, *ids)
            if t.delete_on_ack:
                pipe.xdel(self.stream, *ids)
            await pipe.execute()
        held.difference_update(ids)

    async def _dead_letter(
        self, records: list[StreamRecord], reasons: dict[str, str], held: set[str]
    ) -> None:
        t = self.trigger
        entries = [
            (r.id, dead_letter_entry(r, reasons.get(r.id, "failed"), self.fn.name)) for r in records
        ]
        dead = self.dead_letter_stream
        keys = [self.stream, dead] if dead else [self.stream]
        buried = await self.deps.script(_DEAD_LETTER)(
            keys=keys,
            args=[t.group, "1" if t.delete_on_ack else "0", *dead_letter_args(entries)],
        )
        held.difference_update(r.id for r in records)
        metrics.DEAD_LETTERED.labels(self.fn.name).inc(int(buried))
        metrics.RECORDS.labels(self.fn.name, "dead_lettered").inc(int(buried))


def _records(reply: Any, attempt: int) -> list[StreamRecord]:
    records: list[StreamRecord] = []
    for _stream, entries in reply or []:
        records.extend(
            StreamRecord(id=i, fields=f, attempt=attempt)
            for i, f in entries
            if i is not None and f is not None
        )
    return records
