"""Kafka trigger: batches per consumer group, per-partition order, commit only after success."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from functions.batch import BatchResult, KafkaRecord
from functions.deps import Deps
from functions.registry import Function
from functions.runtime import metrics
from functions.runtime.invoke import BatchHandler, TransientFailure, backoff_s, invoke
from functions.triggers import KafkaTopic

log = logging.getLogger("functions.kafka_topic")


class KafkaTopicRunner:
    """Feeds one function from one Kafka topic as a member of the trigger's consumer group."""

    def __init__(self, fn: Function, deps: Deps, client_id: str, **overrides: Any) -> None:
        assert isinstance(fn.trigger, KafkaTopic)
        self.fn = fn
        self.trigger: KafkaTopic = fn.trigger
        self.deps = deps
        self.handler: BatchHandler = fn.load()
        self._stopping = asyncio.Event()
        config: dict[str, Any] = {
            "bootstrap.servers": deps.settings.kafka_bootstrap,
            "group.id": self.trigger.group,
            "client.id": client_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": max(
                60_000, int(fn.timeout_s * 1000 * (self.trigger.max_attempts + 1))
            ),
        }
        config.update(overrides)
        self.consumer = Consumer(config, logger=log)

    def stop(self) -> None:
        """Finish the batch in hand, then return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until stop(), then leave the group cleanly."""
        self.consumer.subscribe([self.trigger.topic], on_revoke=self._on_revoke)
        try:
            while not self._stopping.is_set():
                messages = await asyncio.to_thread(
                    self.consumer.consume, self.trigger.batch_size, self.trigger.max_wait_ms / 1000
                )
                batch = self._records(messages)
                if batch:
                    await self._process(batch)
        finally:
            await asyncio.to_thread(self.consumer.close)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches are processed between polls and committed right after, so nothing
        # processed is uncommitted when a rebalance takes partitions away.
        log.info(
            "partitions revoked: %s",
            [p.partition for p in partitions],
            extra={"function": self.fn.name, "topic": self.trigger.topic},
        )

    def _records(self, messages: Sequence[KafkaMessage]) -> list[KafkaRecord]:
        records: list[KafkaRecord] = []
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err, extra={"function": self.fn.name})
                continue
            _kind, ts = m.timestamp()
            records.append(
                KafkaRecord(
                    topic=m.topic() or self.trigger.topic,
                    partition=m.partition() or 0,
                    offset=m.offset() or 0,
                    key=m.key(),
                    value=m.value() or b"",
                    timestamp_ms=ts,
                )
            )
        return records

    async def _process(self, batch: list[KafkaRecord]) -> None:
        t = self.trigger
        pending = batch
        attempt = 1
        last_error = "record failed"
        while pending:
            if attempt > 1:
                pending = [_again(r, attempt) for r in pending]
            try:
                result = await invoke(self.fn, self.handler, pending, self.deps)
            except TransientFailure as exc:
                result = BatchResult(failed={r.id for r in pending})
                last_error = str(exc)
            if result.poison:
                await self._dead_letter(
                    [r for r in pending if r.id in result.poison], result.poison
                )
            metrics.RECORDS.labels(self.fn.name, "ok").inc(
                sum(1 for r in pending if r.id not in result.failed and r.id not in result.poison)
            )
            retry = [r for r in pending if r.id in result.failed]
            if not retry:
                break
            if attempt >= t.max_attempts:
                await self._dead_letter(retry, {r.id: last_error for r in retry})
                break
            metrics.RECORDS.labels(self.fn.name, "retried").inc(len(retry))
            # Retrying here, before polling on, keeps every partition's order.
            await asyncio.sleep(backoff_s(attempt))
            attempt += 1
            pending = retry
        await self._commit(batch)

    async def _commit(self, batch: list[KafkaRecord]) -> None:
        last: dict[tuple[str, int], int] = {}
        for r in batch:
            key = (r.topic, r.partition)
            last[key] = max(last.get(key, -1), r.offset)
        offsets = [TopicPartition(topic, part, off + 1) for (topic, part), off in last.items()]
        try:
            await asyncio.to_thread(self.consumer.commit, offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partition: its new owner re-reads from the last commit and
            # the handler's idempotence absorbs the repeat.
            log.warning("commit failed: %s", exc, extra={"function": self.fn.name})

    async def _dead_letter(self, records: list[KafkaRecord], reasons: dict[str, str]) -> None:
        topic = self.trigger.dead_letter
        log.warning(
            "dead-lettering %d records",
            len(records),
            extra={"function": self.fn.name, "dead_letter": topic},
        )
        if topic:
            await self.deps.produce(
                topic,
                [
                    (
                        r.key,
                        r.value,
                        {
                            "error": reasons.get(r.id, "failed"),
                            "attempts": str(r.attempt),
                            "source": r.id,
                            "function": self.fn.name,
                        },
                    )
                    for r in records
                ],
            )
        metrics.DEAD_LETTERED.labels(self.fn.name).inc(len(records))
        metrics.RECORDS.labels(self.fn.name, "dead_lettered").inc(len(records))


def _again(record: KafkaRecord, attempt: int) -> KafkaRecord:
    return KafkaRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        timestamp_ms=record.timestamp_ms,
        attempt=attempt,
    )
