"""Poison isolation on real Redis, Kafka and PostgreSQL: bisection, one dead letter, the cap."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import urllib.request
from typing import Any

import msgspec
import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from devstack import Stack
from functions.aws.bridge import build
from functions.deps import Deps
from functions.runtime.dead_letters import list_dead_letters
from tests.integration import runtime_handlers as rt
from tests.integration.persistence_support import message
from tests.integration.runtime_support import HostProcess, Hosts, create_topics
from tests.support import until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def hosts(stack: Stack, test_id: str, hosts: Hosts) -> Hosts:
    """The test's hosts, once the topics of its functions exist."""
    sources = (rt.bisect_topic(test_id), rt.persist_topic(test_id))
    create_topics(stack, {name: 1 for source in sources for name in (source, rt.dead_of(source))})
    return hosts


def _start(hosts: Hosts, only: list[str]) -> HostProcess:
    return hosts.start(f"functions-poison-{len(hosts.started)}", only)


def _metric(host: HostProcess, name: str, function: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{host.port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{function="{function}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _committed(stack: Stack, group: str, topic: str) -> int:
    """The group's committed offset of partition 0 (-1 while its coordinator is not ready)."""
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": group})
    try:
        (part,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(part.offset)
    except KafkaException:
        return -1
    finally:
        consumer.close()


def _produce(stack: Stack, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for value in values:
        producer.produce(topic, value, partition=0)
    assert producer.flush(10) == 0


async def test_one_crashing_entry_in_a_batch_of_50_is_the_only_dead_letter(
    deps: Deps, hosts: Hosts, test_id: str
) -> None:
    # GIVEN 50 entries landing at once, one of which makes the handler raise
    stream = rt.bisect_stream(test_id)
    keys = [f"k{i:02d}" for i in range(50)]
    async with deps.redis.pipeline(transaction=True) as pipe:
        for key in keys:
            mode = {"mode": "crash"} if key == "k25" else {}
            pipe.xadd(stream, {"key": key, "lane": "room", **mode})
        await pipe.execute()

    # WHEN a host works through them
    _start(hosts, ["rt-bisect-stream"])

    async def dead_lettered() -> bool:
        return int(await deps.redis.xlen(rt.dead_of(stream))) >= 1

    await until(dead_lettered, "the crashing entry to be dead-lettered", 60)

    # THEN only the crashing entry is dead-lettered, after 3 tries alone
    ((_, fields),) = await deps.redis.xrange(rt.dead_of(stream))
    assert fields["key"] == "k25"
    assert fields["_attempts"] == "3"
    assert "cannot handle k25" in fields["_error"]

    # AND the other 49 were each processed exactly once, in order, and acked (the halves after
    # the crashing entry's run once it is dead-lettered)
    async def settled() -> bool:
        done = len(await deps.redis.hgetall(rt.seen_key(test_id))) >= len(keys) - 1
        return done and (await deps.redis.xinfo_groups(stream))[0]["pending"] == 0

    await until(settled, "the other 49 entries to be processed and acked", 60)
    seen = await deps.redis.hgetall(rt.seen_key(test_id))
    assert seen == {k: "1" for k in keys if k != "k25"}
    order = await deps.redis.lrange(rt.order_key(test_id, "room"), 0, -1)
    assert order == [k for k in keys if k != "k25"]
    assert (await deps.redis.xinfo_groups(stream))[0]["pending"] == 0
    assert await deps.redis.xlen(stream) == 0


async def test_one_crashing_record_in_a_batch_of_50_is_the_only_dead_letter(
    stack: Stack, deps: Deps, hosts: Hosts, test_id: str
) -> None:
    # GIVEN 50 records of one partition, one of which makes the handler raise
    topic = rt.bisect_topic(test_id)
    keys = [f"p{i:02d}" for i in range(50)]
    _produce(
        stack,
        topic,
        [json.dumps({"key": k, "mode": "crash" if k == "p25" else ""}).encode() for k in keys],
    )

    # WHEN a host works through them
    _start(hosts, ["rt-bisect-topic"])
    group = f"rt-{test_id}-bisect"

    async def committed_all() -> bool:
        return await asyncio.to_thread(_committed, stack, group, topic) == len(keys)

    await until(committed_all, "the whole partition to be committed", 60, every_s=1)

    # THEN only the crashing record is dead-lettered, after 3 tries alone
    fn = next(f for f in rt.functions_for(test_id) if f.name == "rt-bisect-topic")
    letters = await list_dead_letters(fn, deps)
    assert [(d.source, d.attempts) for d in letters] == [(f"{topic}/0/25", 3)]
    assert "cannot handle p25" in letters[0].error
    # AND the other 49 were each processed exactly once, in order
    seen = await deps.redis.hgetall(rt.seen_key(test_id))
    assert seen == {k: "1" for k in keys if k != "p25"}
    order = await deps.redis.lrange(rt.order_key(test_id, "0"), 0, -1)
    assert order == [k for k in keys if k != "p25"]


async def test_the_dead_letter_cap_stops_a_stream_consumer_fed_only_bad_entries(
    deps: Deps, hosts: Hosts, test_id: str
) -> None:
    # GIVEN a bad deploy: 20 entries, every one poison, and a cap of 5 dead letters a minute
    stream = rt.bisect_stream(test_id)
    async with deps.redis.pipeline(transaction=True) as pipe:
        for i in range(20):
            pipe.xadd(stream, {"key": f"b{i:02d}", "mode": "poison"})
        await pipe.execute()

    # WHEN a host consumes them
    host = _start(hosts, ["rt-bisect-stream"])

    async def stopped() -> bool:
        return _metric(host, "chat_function_dead_letter_stopped", "rt-bisect-stream") == 1

    await until(stopped, "the consumer to stop at its dead-letter cap", 30)

    # THEN it dead-lettered 5, stopped, says why, and leaves the 15 others in the stream
    await asyncio.sleep(3)
    assert await deps.redis.xlen(rt.dead_of(stream)) == rt.CAP
    assert await deps.redis.xlen(stream) == 20 - rt.CAP
    assert "dead_letter_cap" in host.tail(200)
    # AND a restarted host resumes, up to the cap again
    host.kill()
    _start(hosts, ["rt-bisect-stream"])

    async def five_more() -> bool:
        return int(await deps.redis.xlen(rt.dead_of(stream))) == 2 * rt.CAP

    await until(five_more, "the restarted consumer to dead-letter up to its cap", 30)
    await asyncio.sleep(2)
    assert await deps.redis.xlen(rt.dead_of(stream)) == 2 * rt.CAP
    assert await deps.redis.xlen(stream) == 20 - 2 * rt.CAP


async def test_the_dead_letter_cap_stops_a_topic_consumer_before_the_bad_records(
    stack: Stack, deps: Deps, hosts: Hosts, test_id: str
) -> None:
    # GIVEN a bad deploy on a topic: 20 records, every one poison
    topic = rt.bisect_topic(test_id)
    _produce(
        stack, topic, [json.dumps({"key": f"b{i}", "mode": "poison"}).encode() for i in range(20)]
    )
    group = f"rt-{test_id}-bisect"

    # WHEN a host consumes them
    host = _start(hosts, ["rt-bisect-topic"])

    async def stopped() -> bool:
        return _metric(host, "chat_function_dead_letter_stopped", "rt-bisect-topic") == 1

    await until(stopped, "the consumer to stop at its dead-letter cap", 30)

    # THEN 5 are dead-lettered and the group's offset stops right after them
    async def committed_cap() -> bool:
        return await asyncio.to_thread(_committed, stack, group, topic) == rt.CAP

    await until(committed_cap, "the offset after the dead letters to be committed", 20)
    await asyncio.sleep(3)
    fn = next(f for f in rt.functions_for(test_id) if f.name == "rt-bisect-topic")
    letters = await list_dead_letters(fn, deps)
    assert [d.source for d in letters] == [f"{topic}/0/{i}" for i in range(rt.CAP)]
    assert await asyncio.to_thread(_committed, stack, group, topic) == rt.CAP
    assert "dead_letter_cap" in host.tail(200)
    # AND a restarted host resumes at the first record not dead-lettered
    host.kill()
    _start(hosts, ["rt-bisect-topic"])

    async def committed_twice() -> bool:
        return await asyncio.to_thread(_committed, stack, group, topic) == 2 * rt.CAP

    await until(committed_twice, "the restarted consumer to go up to its cap", 60, every_s=1)
    letters = await list_dead_letters(fn, deps)
    assert [d.source for d in letters] == [f"{topic}/0/{i}" for i in range(2 * rt.CAP)]


async def test_a_row_postgresql_refuses_is_the_only_dead_letter_of_its_batch(
    stack: Stack, deps: Deps, hosts: Hosts, test_id: str
) -> None:
    # GIVEN storage stricter than the validators for one text (as after a schema change)
    refused = f"refused {test_id}"
    constraint = f"rt_refuse_{test_id}"
    dsn = deps.settings.postgres_dsn
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f"ALTER TABLE messages ADD CONSTRAINT {constraint} "
            f"CHECK (text <> '{refused}') NOT VALID"
        )
    try:
        # AND ten messages of a room crafted straight onto a messages topic, one refused
        room = f"rt-{test_id}"
        batch = [
            message(room, seq, text=refused if seq == 4 else f"m{seq}") for seq in range(1, 11)
        ]
        encode = msgspec.json.Encoder().encode
        _produce(stack, rt.persist_topic(test_id), [encode(m) for m in batch])

        # WHEN the persist function consumes them
        _start(hosts, ["rt-persist"])

        async def stored() -> bool:
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                cur = await conn.execute("SELECT count(*) FROM messages WHERE room = %s", (room,))
                row = await cur.fetchone()
            return bool(row and row[0] == 9)

        await until(stored, "the nine storable messages to be stored", 90, every_s=0.5)
        persist = next(f for f in rt.functions_for(test_id) if f.name == "rt-persist")

        async def dead_lettered() -> list[str]:
            return [d.payload["value"] for d in await list_dead_letters(persist, deps)]

        async def one_letter() -> bool:
            return len(await dead_lettered()) >= 1

        await until(one_letter, "the refused message to be dead-lettered", 30, every_s=1)

        # THEN only the refused message is dead-lettered, once, and the others are stored
        await asyncio.sleep(2)
        (letter,) = await list_dead_letters(persist, deps)
        assert json.loads(letter.payload["value"])["seq"] == 4
        assert constraint in letter.error and letter.attempts == 3
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute(
                "SELECT seq FROM messages WHERE room = %s ORDER BY seq", (room,)
            )
            assert [r[0] for r in await cur.fetchall()] == [s for s in range(1, 11) if s != 4]
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f"ALTER TABLE messages DROP CONSTRAINT IF EXISTS {constraint}")


class _StubLambda:
    """A Lambda client whose function errors on any batch holding a ``crash`` entry."""

    def __init__(self) -> None:
        self.succeeded: list[str] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        records = json.loads(kwargs["Payload"])["records"]
        if any(r["fields"].get("mode") == "crash" for r in records):
            body = {"errorType": "RuntimeError", "errorMessage": "cannot handle it"}
            return {"FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(body).encode())}
        self.succeeded += [r["fields"]["key"] for r in records]
        reply = {"failed": [], "poison": {}}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(reply).encode())}


async def test_the_stream_bridge_bisects_a_batch_its_lambda_errors_on(
    deps: Deps, test_id: str
) -> None:
    # GIVEN 50 entries at once, one of which makes the function's Lambda error
    stream = rt.bisect_stream(test_id)
    keys = [f"k{i:02d}" for i in range(50)]
    async with deps.redis.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.xadd(stream, {"key": key, **({"mode": "crash"} if key == "k07" else {})})
        await pipe.execute()
    fn = next(f for f in rt.functions_for(test_id) if f.name == "rt-bisect-stream")
    lam = _StubLambda()
    runner = build(fn, "chat-test-bisect", deps, lam, consumer="bridge-0")
    await runner.ensure_group()

    # WHEN the bridge feeds them to the Lambda
    task = asyncio.create_task(runner.run())
    try:

        async def dead_lettered() -> bool:
            return int(await deps.redis.xlen(rt.dead_of(stream))) >= 1

        await until(dead_lettered, "the crashing entry to be dead-lettered", 60)

        async def all_handled() -> bool:
            pending = (await deps.redis.xinfo_groups(stream))[0]["pending"]
            return len(lam.succeeded) >= len(keys) - 1 and pending == 0

        await until(all_handled, "the other entries to be handled and acked", 60)
    finally:
        runner.stop()
        await asyncio.wait_for(task, timeout=30)

    # THEN only that entry is dead-lettered, with the Lambda's error, after 3 tries alone
    ((_, fields),) = await deps.redis.xrange(rt.dead_of(stream))
    assert (fields["key"], fields["_attempts"]) == ("k07", "3")
    assert "RuntimeError: cannot handle it" in fields["_error"]
    # AND the Lambda succeeded on each other entry exactly once, and all are acked
    assert lam.succeeded == [k for k in keys if k != "k07"]
    assert (await deps.redis.xinfo_groups(stream))[0]["pending"] == 0


async def test_a_postgresql_outage_longer_than_every_attempt_dead_letters_nothing(
    stack: Stack, deps: Deps, hosts: Hosts, test_id: str
) -> None:
    # GIVEN the persist function consuming a room's messages, its pool open
    room = f"rt-{test_id}"
    dsn = deps.settings.postgres_dsn
    encode = msgspec.json.Encoder().encode
    _produce(stack, rt.persist_topic(test_id), [encode(message(room, 1))])
    _start(hosts, ["rt-persist"])

    async def stored(count: int) -> bool:
        try:
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                cur = await conn.execute("SELECT count(*) FROM messages WHERE room = %s", (room,))
                row = await cur.fetchone()
        except psycopg.OperationalError:
            return False
        return bool(row and row[0] == count)

    await until(lambda: stored(1), "the first message to be stored", 60, every_s=0.5)
    # WHEN PostgreSQL goes down (a fast shutdown: the test stack runs it without fsync, so a
    # crash could lose rows it committed), ten more messages arrive, and it is back only after
    # 30 s: far longer than the three attempts of 2 s (bisected, backed off) a record is allowed
    stack.kill("postgres", signal.SIGINT)
    _produce(stack, rt.persist_topic(test_id), [encode(message(room, s)) for s in range(2, 12)])
    await asyncio.sleep(30)
    stack.start(["postgres"])
    # THEN every message is stored once it is back, and none was dead-lettered
    await until(lambda: stored(11), "the ten messages to be stored after the outage", 60, 0.5)
    persist = next(f for f in rt.functions_for(test_id) if f.name == "rt-persist")
    assert await list_dead_letters(persist, deps) == []
