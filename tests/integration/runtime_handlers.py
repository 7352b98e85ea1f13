"""Test-only functions for the runtime tests: handlers that record, fail, stall or poison.

Hosts run them with ``python -m functions --registry tests.integration.runtime_handlers:FUNCTIONS``;
``RUNTIME_TEST_ID`` (set by each test) makes every stream, topic and group name its own.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence

from chat import names
from functions.batch import BatchResult, KafkaRecord, StreamRecord
from functions.deps import Deps
from functions.registry import Function
from functions.triggers import KafkaTopic, RedisStream


def stream_name(test_id: str) -> str:
    """The input stream of ``rt-stream``."""
    return f"rt:{{{test_id}}}:in"


def stream_dead_letter(test_id: str) -> str:
    """The dead-letter stream of ``rt-stream``."""
    return f"rt:{{{test_id}}}:dead"


def topic_name(test_id: str) -> str:
    """The input topic of ``rt-topic``."""
    return f"rt.{test_id}.in"


def topic_dead_letter(test_id: str) -> str:
    """The dead-letter topic of ``rt-topic``."""
    return f"rt.{test_id}.dead"


def bisect_stream(test_id: str) -> str:
    """The input stream of ``rt-bisect-stream`` (big batches, a dead-letter cap of 5)."""
    return f"rt:{{{test_id}}}:bisect"


def bisect_topic(test_id: str) -> str:
    """The input topic of ``rt-bisect-topic`` (big batches, a dead-letter cap of 5)."""
    return f"rt.{test_id}.bisect"


def dead_of(source: str) -> str:
    """The dead-letter stream or topic of a bisect function's input."""
    return f"{source}.dead" if "." in source else f"{source}:dead"


# The bisect functions' cap: 5 dead letters a minute, then a cool-down longer than any test.
CAP = 5


def persist_topic(test_id: str) -> str:
    """The input topic of ``rt-persist`` (the real persist function on a topic of the test's)."""
    return f"rt.{test_id}.messages"


def inbound_name(test_id: str) -> str:
    """The inbound stream the real message function reads in these tests."""
    return f"rt:{{{test_id}}}:inbound"


def seen_key(test_id: str) -> str:
    """Hash: record key -> how many times the handler completed it."""
    return f"rt:{{{test_id}}}:seen"


def order_key(test_id: str, lane: str) -> str:
    """List: record keys of one lane (room or partition) in the order they were completed."""
    return f"rt:{{{test_id}}}:order:{lane}"


def fixed_key(test_id: str) -> str:
    """Present once the ``broken`` records may succeed (they are poison until then)."""
    return f"rt:{{{test_id}}}:fixed"


def functions_for(test_id: str) -> tuple[Function, ...]:
    """The test registry for one test."""
    return (
        Function(
            name="rt-stream",
            handler="tests.integration.runtime_handlers:handle_stream",
            trigger=RedisStream(
                stream=stream_name(test_id),
                group="rt",
                batch_size=10,
                max_wait_ms=5,
                visibility_timeout_s=2.0,
                max_attempts=3,
                dead_letter=stream_dead_letter(test_id),
            ),
            timeout_s=0.5,
        ),
        Function(
            name="rt-topic",
            handler="tests.integration.runtime_handlers:handle_topic",
            trigger=KafkaTopic(
                topic=topic_name(test_id),
                group=f"rt-{test_id}",
                batch_size=10,
                max_wait_ms=20,
                max_attempts=3,
                dead_letter=topic_dead_letter(test_id),
            ),
            timeout_s=0.5,
        ),
        Function(
            name="rt-bisect-stream",
            handler="tests.integration.runtime_handlers:handle_stream",
            trigger=RedisStream(
                stream=bisect_stream(test_id),
                group="rt",
                batch_size=50,
                max_wait_ms=200,
                visibility_timeout_s=5.0,
                max_attempts=3,
                dead_letter=dead_of(bisect_stream(test_id)),
                dead_letter_cap=CAP,
                dead_letter_cooldown_s=600.0,
            ),
            timeout_s=2.0,
        ),
        Function(
            name="rt-bisect-topic",
            handler="tests.integration.runtime_handlers:handle_topic",
            trigger=KafkaTopic(
                topic=bisect_topic(test_id),
                group=f"rt-{test_id}-bisect",
                batch_size=50,
                max_wait_ms=1000,
                max_attempts=3,
                dead_letter=dead_of(bisect_topic(test_id)),
                dead_letter_cap=CAP,
                dead_letter_cooldown_s=600.0,
            ),
            timeout_s=2.0,
        ),
        Function(
            name="rt-persist",
            handler="functions.persist:handle",
            trigger=KafkaTopic(
                topic=persist_topic(test_id),
                group=f"rt-{test_id}-persist",
                batch_size=200,
                max_wait_ms=500,
                max_attempts=3,
                dead_letter=dead_of(persist_topic(test_id)),
            ),
            # Short, so an outage fails its calls quickly: three attempts fit well within one.
            timeout_s=2.0,
        ),
        Function(
            name="message",
            handler="functions.message:handle",
            trigger=RedisStream(
                stream=inbound_name(test_id),
                group="message",
                batch_size=50,
                max_wait_ms=5,
                visibility_timeout_s=3.0,
                dead_letter=f"rt:{{{test_id}}}:inbound:dead",
            ),
            timeout_s=10.0,
        ),
        Function(
            name="persist",
            handler="functions.persist:handle",
            trigger=KafkaTopic(
                topic=names.MESSAGES_TOPIC,
                group=f"rt-{test_id}-persist",
                batch_size=200,
                max_wait_ms=20,
                dead_letter=names.MESSAGES_DEAD_LETTER,
            ),
            timeout_s=10.0,
        ),
    )


TEST_ID = os.environ.get("RUNTIME_TEST_ID", "local")
FUNCTIONS = functions_for(TEST_ID)


async def _apply(
    deps: Deps, items: Sequence[tuple[str, str, dict[str, str]]], attempt_of: dict[str, int]
) -> BatchResult:
    """Run the test behaviour of each (record id, lane, payload)."""
    crashing = [p["key"] for _, _, p in items if p.get("mode") == "crash"]
    if crashing:
        # Poison by exception: the whole invocation fails, whichever records it also holds.
        raise RuntimeError(f"cannot handle {crashing[0]}")
    result = BatchResult()
    done: list[tuple[str, str]] = []
    for record_id, lane, payload in items:
        mode = payload.get("mode", "")
        if mode == "poison":
            result.poison[record_id] = f"poison record {payload['key']}"
        elif mode == "broken" and not await deps.redis.exists(fixed_key(TEST_ID)):
            result.poison[record_id] = f"broken record {payload['key']}"
        elif mode == "slow":
            await asyncio.sleep(5)
        elif mode == "flaky" and attempt_of[record_id] < 2:
            result.failed.add(record_id)
        else:
            done.append((payload["key"], lane))
    if mode_delay := max((float(p.get("sleep", 0)) for _, _, p in items), default=0.0):
        await asyncio.sleep(mode_delay)
    async with deps.redis.pipeline(transaction=True) as pipe:
        for key, lane in done:
            pipe.hincrby(seen_key(TEST_ID), key, 1)
            pipe.rpush(order_key(TEST_ID, lane), key)
        await pipe.execute()
    return result


async def handle_stream(batch: Sequence[StreamRecord], deps: Deps) -> BatchResult:
    """Stream records: fields ``key``, ``lane`` and optional ``mode``/``sleep``."""
    items = [(r.id, r.fields.get("lane", "0"), dict(r.fields)) for r in batch]
    return await _apply(deps, items, {r.id: r.attempt for r in batch})


async def handle_topic(batch: Sequence[KafkaRecord], deps: Deps) -> BatchResult:
    """Topic records: a JSON object with ``key`` and optional ``mode``/``sleep``."""
    items = [(r.id, str(r.partition), json.loads(r.value)) for r in batch]
    return await _apply(deps, items, {r.id: r.attempt for r in batch})
