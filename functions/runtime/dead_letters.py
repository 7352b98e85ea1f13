"""Inspect and replay a function's dead letters (its dead-letter stream or topic).

The dead letter's format is ``chat.dead_letters``'; this module finds and moves them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, assert_never

from confluent_kafka import Consumer, TopicPartition

from chat import dead_letters
from chat.clients import kafka_connection
from chat.dead_letters import DeadLetter
from functions.deps import Deps
from functions.registry import Function
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule, StreamPartition


class NoDeadLetters(ValueError):
    """The function declares no dead-letter stream or topic."""


def _target(fn: Function) -> RedisStream | KafkaTopic:
    trigger = fn.trigger
    match trigger:
        case RedisStream() | KafkaTopic():
            if not trigger.dead_letter:
                raise NoDeadLetters(f"function {fn.name} declares no dead letter")
            return trigger
        case HttpRoute() | Schedule():
            raise NoDeadLetters(f"function {fn.name} is not triggered by a stream or a topic")
        case _:
            assert_never(trigger)


async def list_dead_letters(fn: Function, deps: Deps, limit: int = 100) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters of ``fn``."""
    trigger = _target(fn)
    if isinstance(trigger, RedisStream):
        redis: Any = deps.redis
        letters: list[DeadLetter] = []
        for partition in _partitions(trigger, deps):
            assert partition.dead_letter
            rows = await redis.xrange(partition.dead_letter, count=limit - len(letters))
            letters += [
                dead_letters.from_stream_entry(_letter_id(trigger, partition, entry_id), fields)
                for entry_id, fields in rows
            ]
            if len(letters) >= limit:
                break
        return letters
    return await asyncio.to_thread(_read_topic, trigger, deps, limit)


async def replay(fn: Function, deps: Deps, ids: Sequence[str] | None) -> list[str]:
    """Put dead letters (``ids``, or all when None) back on the function's input; their ids."""
    trigger = _target(fn)
    if isinstance(trigger, RedisStream):
        return await _replay_stream(trigger, deps, ids)
    letters = await asyncio.to_thread(_read_topic, trigger, deps, None)
    chosen = [d for d in letters if ids is None or d.id in set(ids)]
    await deps.produce(trigger.topic, [dead_letters.kafka_replay(d) for d in chosen])
    return [d.id for d in chosen]


def _partitions(trigger: RedisStream, deps: Deps) -> tuple[StreamPartition, ...]:
    return trigger.partitions(deps.settings.inbound_partitions)


def _letter_id(trigger: RedisStream, partition: StreamPartition, entry_id: str) -> str:
    # A partitioned trigger's dead letters live in one stream per partition: "<partition>/<id>".
    return f"{partition.index}/{entry_id}" if trigger.partitioned else entry_id


async def _replay_stream(trigger: RedisStream, deps: Deps, ids: Sequence[str] | None) -> list[str]:
    redis: Any = deps.redis
    replayed: list[str] = []
    for partition in _partitions(trigger, deps):
        dead = partition.dead_letter
        assert dead
        rows: list[tuple[str, dict[str, str]]]
        if ids is None:
            rows = await redis.xrange(dead)
        else:
            mine = [
                entry_id
                for letter in ids
                for entry_id in [letter.rpartition("/")[2]]
                if _letter_id(trigger, partition, entry_id) == letter
            ]
            rows = []
            for entry_id in mine:
                rows += await redis.xrange(dead, min=entry_id, max=entry_id)
        for entry_id, fields in rows:
            entry = dead_letters.replay_entry(entry_id, fields)
            # One transaction (the partition and its dead letters share a slot): a dead
            # letter is either back on the stream or still dead.
            async with redis.pipeline(transaction=True) as pipe:
                pipe.xadd(partition.stream, entry)
                pipe.xdel(dead, entry_id)
                await pipe.execute()
            replayed.append(_letter_id(trigger, partition, entry_id))
    return replayed


def _read_topic(trigger: KafkaTopic, deps: Deps, limit: int | None) -> list[DeadLetter]:
    """Read the dead-letter topic from its start to its current end, committing nothing."""
    assert trigger.dead_letter
    consumer = Consumer(
        {
            **kafka_connection(deps.settings),
            "group.id": f"dead-letter-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        topic = consumer.list_topics(trigger.dead_letter, timeout=10).topics[trigger.dead_letter]
        ends: dict[int, int] = {}
        starts: list[Any] = []
        for part in topic.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(trigger.dead_letter, part), timeout=10
            )
            if high > low:
                ends[part] = high
                starts.append(TopicPartition(trigger.dead_letter, part, low))
        consumer.assign(starts)
        letters: list[DeadLetter] = []
        open_parts = set(ends)
        while open_parts and (limit is None or len(letters) < limit):
            messages = consumer.consume(500, 1.0)
            if not messages:
                break
            for m in messages:
                part, offset = m.partition(), m.offset()
                if m.error() is not None or part not in open_parts or offset is None:
                    continue
                letter_id = f"{m.topic()}/{part}/{offset}"
                letters.append(
                    dead_letters.from_kafka(letter_id, m.key(), m.value(), m.headers() or [])
                )
                if offset + 1 >= ends[part]:
                    open_parts.discard(part)
        return letters[:limit] if limit is not None else letters
    finally:
        consumer.close()
