"""Kafka trigger: batches per consumer group, per-partition order, commit only after success.

Semantics, close to a Lambda event source mapping for Kafka:

- classic group protocol with the cooperative-sticky assignor: a rebalance moves only the
  partitions that change owner, and the others keep flowing;
- the consumer is polled all the time, also while a batch runs, so the group always sees a
  live member; while a full batch waits behind the one in hand the partitions are paused
  (backpressure), and resumed once it is taken;
- one batch at a time per runner, through ``functions.runtime.policy``: a batch the handler
  raises on is bisected (first half first) until the failing record is alone; failed records
  are retried with backoff before anything later of their partition is handed over, so each
  partition's order holds; after ``max_attempts`` they go to the dead-letter topic; poison
  records go there at once; past the dead-letter cap the runner leaves the group for its
  cool-down and rejoins at its first unfinished record;
- an offset is committed only once its record and every earlier one of its partition are
  done; a revoked partition's progress is committed in the revoke callback, after the batch
  in hand has finished (or given up the revoked records), so its next owner starts right
  after it.

Every call on the consumer runs on one thread of the runner's own, so callbacks fired inside
``consume`` or ``close`` never race a commit, a pause or another poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from chat.clients import kafka_connection
from chat.settings import Settings
from functions.batch import KafkaRecord
from functions.deps import Deps
from functions.registry import Function
from functions.runtime import metrics
from functions.runtime.invoke import BatchHandler, backoff_s, invoke
from functions.runtime.policy import Limits, Policy, produce_dead_letters
from functions.triggers import KafkaTopic

log = logging.getLogger("functions.kafka_topic")

T = TypeVar("T")
Partition = tuple[str, int]

# How often the consumer-lag gauge is refreshed.
_LAG_EVERY_S = 5.0
# Extra time a revoke waits for the batch in hand beyond one invocation's timeout.
_REVOKE_SLACK_S = 5.0


class Fetched:
    """Records fetched but not yet handed to the handler, in fetch order (not thread-safe)."""

    def __init__(self) -> None:
        self._records: deque[KafkaRecord] = deque()
        self._oldest = 0.0

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Iterable[KafkaRecord], now: float) -> None:
        """Append freshly fetched records."""
        was_empty = not self._records
        self._records.extend(records)
        if was_empty and self._records:
            self._oldest = now

    def ready(self, batch_size: int, max_wait_s: float, now: float) -> bool:
        """A batch is due: a full one is waiting, or the oldest record waited long enough."""
        if not self._records:
            return False
        return len(self._records) >= batch_size or now - self._oldest >= max_wait_s

    def take(self, batch_size: int, now: float) -> list[KafkaRecord]:
        """Remove and return up to ``batch_size`` records, oldest first."""
        count = min(batch_size, len(self._records))
        batch = [self._records.popleft() for _ in range(count)]
        self._oldest = now
        return batch

    def drop(self, partitions: set[Partition]) -> int:
        """Forget the records of partitions this runner no longer owns; return how many."""
        kept = [r for r in self._records if (r.topic, r.partition) not in partitions]
        dropped = len(self._records) - len(kept)
        self._records = deque(kept)
        return dropped


def commit_points(batch: Sequence[KafkaRecord], unfinished: set[str]) -> dict[Partition, int]:
    """Per partition, the offset to commit after ``batch``: the first unfinished record's, or
    the one after the last record when all are done (a partition with none done is left out)."""
    first: dict[Partition, int] = {}
    last: dict[Partition, int] = {}
    first_open: dict[Partition, int] = {}
    for r in batch:
        tp = (r.topic, r.partition)
        first[tp] = min(first.get(tp, r.offset), r.offset)
        last[tp] = max(last.get(tp, -1), r.offset)
        if r.id in unfinished:
            first_open[tp] = min(first_open.get(tp, r.offset), r.offset)
    points = {tp: first_open.get(tp, off + 1) for tp, off in last.items()}
    return {tp: point for tp, point in points.items() if point > first[tp]}


SESSION_TIMEOUT_MS = 6_000


def consumer_config(fn: Function, client_id: str, settings: Settings) -> dict[str, Any]:
    """The consumer configuration of a runner of ``fn`` (before overrides)."""
    assert isinstance(fn.trigger, KafkaTopic)
    return {
        **kafka_connection(settings),
        "group.id": fn.trigger.group,
        "client.id": client_id,
        # Explicit: the cooperative assignor and commit-in-revoke below assume the classic
        # protocol, whichever default a future librdkafka picks.
        "group.protocol": "classic",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Failure detection: a dead host's partitions move after this long. It also bounds how
        # long persistence waits after a broker restart: the reloaded group keeps its old
        # members until their sessions expire. 6 s is the broker's minimum by default.
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 1_000,
        # The runner polls while batches run; only a revoke waiting for a batch holds a poll.
        "max.poll.interval.ms": max(60_000, int((fn.timeout_s + _REVOKE_SLACK_S) * 2000)),
        # Small fetch buffers: backpressure pauses partitions, librdkafka need not prefetch far.
        "queued.max.messages.kbytes": 16_384,
    }


class KafkaTopicRunner:
    """Feeds one function from one Kafka topic as a member of the trigger's consumer group.

    One runner runs one batch at a time: a function's concurrency is its number of runners.
    """

    def __init__(self, fn: Function, deps: Deps, client_id: str, **overrides: Any) -> None:
        assert isinstance(fn.trigger, KafkaTopic)
        self.fn = fn
        self.trigger: KafkaTopic = fn.trigger
        self.deps = deps
        self.handler: BatchHandler = fn.load()
        self._stopping = asyncio.Event()
        config = consumer_config(fn, client_id, deps.settings)
        config.update(overrides)
        self.consumer = Consumer(config, logger=log)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{fn.name}")
        # Shared between the consumer thread (callbacks) and the event loop (the batch).
        self._lock = threading.Lock()
        self._fetched = Fetched()
        self._assigned: set[Partition] = set()
        self._paused: set[Partition] = set()
        self._gone: set[Partition] = set()  # revoked or lost while a batch was in hand
        self._revoking: set[Partition] = set()  # revoked, progress still to be committed
        self._done: dict[Partition, int] = {}  # next offset to commit
        self._committed: dict[Partition, int] = {}
        self._in_hand: set[Partition] = set()
        self._idle = threading.Event()
        self._idle.set()
        self._next_lag = 0.0
        self.policy: Policy[KafkaRecord] = Policy(
            fn.name,
            Limits.of(self.trigger),
            partial(invoke, fn, self.handler, deps=deps),
            self,
            self._stopping,
            available=deps.available,
        )

    def stop(self) -> None:
        """Finish the batch in hand, commit, then leave the group from run()."""
        self._stopping.set()

    async def _on_thread(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: call(*args, **kwargs))

    async def run(self) -> None:
        """Consume until stop(), then commit and leave the group cleanly."""
        t = self.trigger
        worker: asyncio.Task[None] | None = None
        try:
            await self._subscribe()
            while not self._stopping.is_set():
                messages = await self._on_thread(
                    self.consumer.consume, t.batch_size, t.max_wait_ms / 1000
                )
                now = time.monotonic()
                with self._lock:
                    self._fetched.add(self._records(messages), now)
                if worker is not None and worker.done():
                    worker.result()  # a bug in the runner stops it rather than skip records
                    worker = None
                if worker is None and self.policy.cap.tripped:
                    await self._cool_down()
                    continue
                if worker is None:
                    batch = self._next_batch(now)
                    if batch:
                        worker = asyncio.create_task(self._process(batch), name="kafka-batch")
                await self._on_thread(self._housekeeping)
            if worker is not None:
                await worker
                worker = None
            await self._on_thread(self._commit_done)
        finally:
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            # close() revokes what is left, and the revoke callback commits it.
            await self._on_thread(self.consumer.close)
            self._thread.shutdown(wait=False)

    async def _cool_down(self) -> None:
        """Leave the group while the dead-letter cap holds consuming stopped, then rejoin.

        Progress up to the first unfinished record is committed first; the revoke drops what
        was fetched beyond it, so rejoining resumes right at that record.
        """
        await self._on_thread(self._commit_done)
        await self._on_thread(self.consumer.unsubscribe)
        while self.policy.cap.tripped and not self._stopping.is_set():
            # Polling serves the revoke callback and keeps the client's state current.
            await self._on_thread(self.consumer.consume, 1, min(1.0, self.policy.cap.remaining_s()))
        await self._subscribe()

    async def _subscribe(self) -> None:
        await self._on_thread(
            self.consumer.subscribe,
            [self.trigger.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _next_batch(self, now: float) -> list[KafkaRecord]:
        t = self.trigger
        with self._lock:
            if not self._fetched.ready(t.batch_size, t.max_wait_ms / 1000, now):
                return []
            batch = self._fetched.take(t.batch_size, now)
            self._in_hand = {(r.topic, r.partition) for r in batch}
            self._gone.clear()
            self._idle.clear()
        return batch

    # ----- on the consumer thread -----

    def _housekeeping(self) -> None:
        self._commit_done()
        self._flow_control()
        now = time.monotonic()
        if now >= self._next_lag:
            self._next_lag = now + _LAG_EVERY_S
            self._observe_lag()

    def _commit_done(self, only: set[Partition] | None = None) -> None:
        with self._lock:
            due = {
                tp: off
                for tp, off in self._done.items()
                if off > self._committed.get(tp, -1) and (only is None or tp in only)
            }
        if not due:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(tp[0], tp[1], off) for tp, off in due.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Kept in _done: the next round (or the revoke callback) commits it again.
            log.warning("commit failed: %s", exc, extra={"function": self.fn.name})
            return
        with self._lock:
            for tp, off in due.items():
                self._committed[tp] = max(self._committed.get(tp, -1), off)

    def _flow_control(self) -> None:
        """Pause fetching while a full batch already waits; resume once it is taken."""
        with self._lock:
            full = len(self._fetched) >= self.trigger.batch_size
            to_pause = self._assigned - self._paused if full else set()
            to_resume = set() if full else self._paused & self._assigned
            self._paused = (self._paused | to_pause) - to_resume
        try:
            if to_pause:
                self.consumer.pause([TopicPartition(t, p) for t, p in to_pause])
            if to_resume:
                self.consumer.resume([TopicPartition(t, p) for t, p in to_resume])
        except KafkaException as exc:
            log.warning("pause/resume failed: %s", exc, extra={"function": self.fn.name})
            with self._lock:
                self._paused -= to_pause

    def _observe_lag(self) -> None:
        with self._lock:
            owned = sorted(self._assigned)
            done = dict(self._done)
        for topic, part in owned:
            try:
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, part), cached=True
                )
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            position = done.get((topic, part)) or self._committed.get((topic, part))
            if position is None:
                continue
            metrics.CONSUMER_LAG.labels(self.fn.name, topic, str(part)).set(max(0, high - position))

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        got = {(p.topic, p.partition) for p in partitions}
        with self._lock:
            self._assigned |= got
            self._paused -= got
        log.info(
            "partitions assigned: %s",
            sorted(p for _, p in got),
            extra={"function": self.fn.name, "topic": self.trigger.topic},
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        with self._lock:
            self._revoking |= gone
        # The batch in hand stops retrying these partitions after its current invocation;
        # whatever it finished by then is committed here, before the partitions move.
        if self._release(gone) and not self._idle.wait(timeout=self.fn.timeout_s + _REVOKE_SLACK_S):
            log.warning(
                "revoke did not wait for the batch in hand; its next owner repeats it",
                extra={"function": self.fn.name},
            )
        self._commit_done(only=gone)
        self._forget(gone)
        log.info(
            "partitions revoked: %s",
            sorted(p for _, p in gone),
            extra={"function": self.fn.name, "topic": self.trigger.topic},
        )

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may own them already, so nothing is committed.
        gone = {(p.topic, p.partition) for p in partitions}
        self._release(gone)
        self._forget(gone)
        log.warning(
            "partitions lost: %s",
            sorted(p for _, p in gone),
            extra={"function": self.fn.name, "topic": self.trigger.topic},
        )

    def _release(self, gone: set[Partition]) -> bool:
        """Stop fetching and retrying ``gone``; True if the batch in hand holds some of it."""
        with self._lock:
            self._assigned -= gone
            self._paused -= gone
            self._gone |= gone & self._in_hand
            self._fetched.drop(gone)
            return bool(gone & self._in_hand)

    def _forget(self, gone: set[Partition]) -> None:
        with self._lock:
            self._revoking -= gone
            for tp in gone:
                self._done.pop(tp, None)
                self._committed.pop(tp, None)
        for topic, part in gone:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.fn.name, topic, str(part))

    def _records(self, messages: Sequence[KafkaMessage]) -> list[KafkaRecord]:
        records: list[KafkaRecord] = []
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err, extra={"function": self.fn.name})
                continue
            topic, part = m.topic() or self.trigger.topic, m.partition() or 0
            # A record fetched just before its partition was revoked is its new owner's.
            if (topic, part) not in self._assigned:
                continue
            _kind, ts = m.timestamp()
            records.append(
                KafkaRecord(
                    topic=topic,
                    partition=part,
                    offset=m.offset() or 0,
                    key=m.key(),
                    value=m.value() or b"",
                    timestamp_ms=ts,
                )
            )
        return records

    # ----- on the event loop -----

    async def _process(self, batch: list[KafkaRecord]) -> None:
        unfinished = {r.id for r in batch}
        try:
            unfinished = await self.policy.run(batch)
        finally:
            points = commit_points(batch, unfinished)
            with self._lock:
                for tp, off in points.items():
                    # A revoked partition's progress is committed by the waiting revoke
                    # callback; a lost one's is not ours to commit.
                    if tp in self._assigned or tp in self._revoking:
                        self._done[tp] = max(self._done.get(tp, -1), off)
                self._in_hand = set()
            self._idle.set()

    def _ours(self, records: list[KafkaRecord]) -> list[KafkaRecord]:
        with self._lock:
            gone = set(self._gone)
        return [r for r in records if (r.topic, r.partition) not in gone]

    # ----- the policy's sink -----

    def owned(self, records: list[KafkaRecord]) -> list[KafkaRecord]:
        """The records whose partitions this runner still owns."""
        return self._ours(records)

    async def done(self, records: list[KafkaRecord], settle: asyncio.Future[None] | None) -> None:
        """Count ``records`` done; their offsets are committed once every earlier one is."""
        if settle is not None:
            await settle
        metrics.RECORDS.labels(self.fn.name, "ok").inc(len(records))

    async def again(self, records: list[KafkaRecord]) -> list[KafkaRecord]:
        """The records still ours, one attempt further."""
        return [dataclasses.replace(r, attempt=r.attempt + 1) for r in self._ours(records)]

    async def dead_letter(self, records: list[KafkaRecord], reasons: dict[str, str]) -> bool:
        """Produce ``records`` to the dead-letter topic; False if the runner gave up trying."""
        failures = 0
        while True:
            try:
                await produce_dead_letters(
                    self.deps, self.fn.name, self.trigger.dead_letter, records, reasons
                )
                return True
            except Exception:
                failures += 1
                log.exception("dead-lettering failed", extra={"function": self.fn.name})
                # Never skip past an undelivered dead letter: hold the partition instead.
                if self._stopping.is_set() or not self._ours(records):
                    return False
                await asyncio.sleep(backoff_s(failures, base=0.5, cap=10))
