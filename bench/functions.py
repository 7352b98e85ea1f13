"""Function runtime bench: records/s of the message and persist functions, and takeover time.

    python -m bench.functions [--records 20000]

Starts private Redis, PostgreSQL and Kafka, then measures on this machine:

1. the message function alone (one runner, the registry's trigger settings) against a raw
   XREADGROUP + XACK/XDEL loop over the same number of entries;
2. the persist function alone (its runners, as a host runs it) against a raw consume + commit loop;
3. the time from a host's kill -9 to another host picking up its work: stream entries it held
   (visibility timeout) and Kafka partitions it owned (session timeout).

Prints progress and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.stack import private_stack
from devstack.stack import SERVICES
from functions.batch import BatchResult, KafkaRecord, StreamRecord
from functions.deps import Deps
from functions.registry import REGISTRY, Function
from functions.runtime.kafka_topic import SESSION_TIMEOUT_MS
from functions.runtime.partitions import PartitionedRunner
from functions.triggers import KafkaTopic, RedisStream

REPO = Path(__file__).resolve().parent.parent
TAKEOVER_STREAM = "bench:takeover"
TAKEOVER_TOPIC = "bench.takeover"
OWNERS = "bench:owners"  # hash: partition -> "node|monotonic-ish wall time"


async def hold(batch: Sequence[StreamRecord], deps: Deps) -> BatchResult:
    """Takeover handler for streams: hold each batch a while, like a slow real one."""
    await asyncio.sleep(1.0)
    return BatchResult()


async def note_owner(batch: Sequence[KafkaRecord], deps: Deps) -> BatchResult:
    """Takeover handler for topics: note which host handled each partition, and when."""
    node = deps.settings.node_id
    await deps.redis.hset(
        OWNERS, mapping={str(r.partition): f"{node}|{time.time()}" for r in batch}
    )
    return BatchResult()


_MESSAGE_TRIGGER = REGISTRY["message"].trigger
_PERSIST_TRIGGER = REGISTRY["persist"].trigger
assert isinstance(_MESSAGE_TRIGGER, RedisStream) and isinstance(_PERSIST_TRIGGER, KafkaTopic)

TAKEOVER = (
    Function(
        name="bench-hold",
        handler="bench.functions:hold",
        trigger=dataclasses.replace(
            _MESSAGE_TRIGGER,
            stream=TAKEOVER_STREAM,
            group="bench",
            batch_size=10,
        ),
        timeout_s=10,
    ),
    Function(
        name="bench-owner",
        handler="bench.functions:note_owner",
        trigger=dataclasses.replace(
            _PERSIST_TRIGGER, topic=TAKEOVER_TOPIC, group="bench-owner", batch_size=50
        ),
        timeout_s=10,
    ),
)


def say(line: str) -> None:
    """Progress on stdout, at once."""
    print(line, flush=True)


def deps_for(stack: Any) -> Deps:
    """Clients of the private stack."""
    from chat.settings import Settings

    return Deps(Settings.from_env(stack.env(), environment="test", node_id="bench"))


async def until(
    check: Callable[[], Awaitable[int]], want: int, what: str, limit_s: float, every_s: float = 0.02
) -> float:
    """Seconds until ``check()`` reaches ``want``, printing progress; fails past ``limit_s``."""
    started = time.monotonic()
    shown = started
    while True:
        got = await check()
        now = time.monotonic()
        if got >= want:
            return now - started
        if now - started > limit_s:
            raise SystemExit(f"{what}: only {got}/{want} after {limit_s:.0f}s")
        if now - shown >= 2:
            say(f"  {what}: {got}/{want}")
            shown = now
        await asyncio.sleep(every_s)


async def run_for(runners: Any, work: Callable[[], Awaitable[float]]) -> float:
    """Run a runner (or a list of them) while ``work`` measures, then stop them."""
    group = runners if isinstance(runners, list) else [runners]
    tasks = [asyncio.create_task(r.run()) for r in group]
    try:
        return await work()
    finally:
        for r in group:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


def inbound_entries(count: int, rooms: int) -> list[dict[str, str]]:
    """Sends as gateways write them."""
    from chat import inbound
    from chat.contract import SendRequest

    tag = uuid.uuid4().hex[:6]
    return [
        inbound.send_entry(
            SendRequest(room=f"bench-{tag}-{n % rooms}", text=f"hello {n}", client_msg_id=f"{n}"),
            sender=f"user{n % 50}",
            ts="2026-11-28T10:00:00.000Z",
        )
        for n in range(count)
    ]


async def xadd_all(deps: Deps, stream: str, entries: list[dict[str, str]]) -> None:
    """Append entries in pipelined chunks."""
    for start in range(0, len(entries), 1000):
        async with deps.redis.pipeline(transaction=False) as pipe:
            for fields in entries[start : start + 1000]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()


async def stream_baseline(deps: Deps, count: int) -> float:
    """Records/s of a bare consumer-group loop: XREADGROUP 200, XACK + XDEL."""
    stream = f"bench:raw:{uuid.uuid4().hex[:6]}"
    await xadd_all(deps, stream, inbound_entries(count, 50))
    await deps.redis.xgroup_create(stream, "raw", id="0")
    started = time.monotonic()
    done = 0
    while done < count:
        redis: Any = deps.redis
        reply = await redis.xreadgroup("raw", "raw-1", {stream: ">"}, count=200, block=100)
        ids = [entry_id for _, entries in reply or [] for entry_id, _ in entries]
        async with deps.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, "raw", *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
        done += len(ids)
    return count / (time.monotonic() - started)


async def message_alone(deps: Deps, count: int) -> float:
    """Records/s of the message function, one runner, the registry's trigger but its stream."""
    from functions.runtime.redis_stream import RedisStreamRunner

    fn = REGISTRY["message"]
    assert isinstance(fn.trigger, RedisStream)
    stream = f"bench:inbound:{uuid.uuid4().hex[:6]}"
    trigger = dataclasses.replace(fn.trigger, stream=stream, partitioned=False)
    fn = dataclasses.replace(fn, trigger=trigger)
    await xadd_all(deps, stream, inbound_entries(count, 200))
    runner = RedisStreamRunner(fn, deps, consumer="bench-1")

    async def left() -> int:
        groups = await deps.redis.xinfo_groups(stream)
        if not groups:
            return 0
        g = groups[0]
        return count - int(g.get("pending") or 0) - int(g.get("lag") or 0)

    took = await run_for(runner, lambda: until(left, count, "message function", 300, every_s=0.1))
    return count / took


def kafka_records(count: int) -> list[tuple[bytes, bytes]]:
    """Sequenced messages as the message function produces them: (room key, JSON value)."""
    import msgspec

    from chat.contract import Message
    from chat.ids import message_id

    tag = uuid.uuid4().hex[:6]
    encode = msgspec.json.Encoder().encode
    records = []
    for n in range(count):
        room = f"bench-{tag}-{n % 200}"
        msg = Message(
            id=message_id(f"user{n % 50}", room, str(n)),
            room=room,
            seq=n // 200 + 1,
            sender=f"user{n % 50}",
            text=f"hello {n}",
            client_msg_id=str(n),
            ts="2026-11-28T10:00:00.000Z",
        )
        records.append((room.encode(), encode(msg)))
    return records


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create a topic for the bench."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)


def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Produce and wait for every acknowledgement."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def topic_baseline(bootstrap: str, count: int) -> float:
    """Records/s of a bare consume + synchronous commit loop (batches of 1000)."""
    from confluent_kafka import Consumer

    topic = f"bench.raw.{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, 4)
    produce_all(bootstrap, topic, kafka_records(count))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    started: float | None = None
    done = 0
    try:
        while done < count:
            messages = [m for m in consumer.consume(1000, 0.05) if m.error() is None]
            if messages:
                started = started or time.monotonic()
                done += len(messages)
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return count / (time.monotonic() - (started or time.monotonic()))


async def persist_alone(
    deps: Deps, count: int, on_first_row: Callable[[int], None] | None = None
) -> float:
    """Records/s of the persist function as a host runs it: its concurrency, its trigger.

    ``on_first_row`` is called with the rows stored when the clock starts (a CPU meter's start).
    """
    import psycopg

    from functions.runtime.kafka_topic import KafkaTopicRunner

    bootstrap = deps.settings.kafka_bootstrap
    topic = f"bench.persist.{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, deps.settings.kafka_messages_partitions)
    records = kafka_records(count)
    await asyncio.to_thread(produce_all, bootstrap, topic, records)
    fn = REGISTRY["persist"]
    assert isinstance(fn.trigger, KafkaTopic)
    fn = dataclasses.replace(
        fn, trigger=dataclasses.replace(fn.trigger, topic=topic, group=f"bench-{topic}")
    )
    prefix = records[0][0].decode().rsplit("-", 1)[0] + "-%"
    runners = [KafkaTopicRunner(fn, deps, client_id=f"bench-{i}") for i in range(fn.concurrency)]

    async def rows() -> int:
        async with await psycopg.AsyncConnection.connect(deps.settings.postgres_dsn) as conn:
            cur = await conn.execute("SELECT count(*) FROM messages WHERE room LIKE %s", (prefix,))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # Kafka's group join is not the function's throughput: the clock starts at the first row.
    async def measured() -> float:
        # Counting rows runs on the runner's own event loop and database: poll it sparingly.
        await until(rows, 1, "persist first row", 60)
        if on_first_row is not None:
            on_first_row(await rows())
        return await until(rows, count, "persist function", 300, every_s=0.25)

    took = await run_for(runners, measured)
    return count / took


class Host:
    """A ``python -m functions host`` child over the bench's takeover registry."""

    def __init__(self, stack: Any, name: str, only: str, logs: Path) -> None:
        self.name = name
        env = {**os.environ, **stack.env(), "CHAT_NODE_ID": name, "PYTHONUNBUFFERED": "1"}
        self.log = (logs / f"{name}.log").open("wb")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "functions", "--registry", "bench.functions:TAKEOVER"),
                *("host", "--only", only, "--port", str(port), "--grace", "5"),
            ],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """kill -9 the host's process group (nothing if it is gone already)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()


async def stream_takeover(stack: Any, deps: Deps, logs: Path) -> float:
    """Seconds from kill -9 of a host holding partitions' entries to another host holding them."""
    fn = TAKEOVER[0]
    trigger = fn.trigger
    assert isinstance(trigger, RedisStream)
    redis: Any = deps.redis
    streams = [p.stream for p in trigger.partitions(deps.settings.inbound_partitions)]
    for i, stream in enumerate(streams):
        await xadd_all(deps, stream, [{"n": str(n)} for n in range(i, 800, len(streams))])
    first = Host(stack, "functions-1", fn.name, logs)
    second = Host(stack, "functions-2", fn.name, logs)
    victim = f"functions-1-{fn.name}"
    try:

        async def pending_of(consumer: str) -> dict[str, list[str]]:
            held: dict[str, list[str]] = {}
            for stream in streams:
                with contextlib.suppress(Exception):
                    rows = await redis.xpending_range(
                        stream, trigger.group, "-", "+", 1000, consumername=consumer
                    )
                    if rows:
                        held[stream] = [row["message_id"] for row in rows]
            return held

        async def both_hold() -> int:
            mine, theirs = await pending_of(victim), await pending_of("functions-2-bench-hold")
            return int(bool(mine) and bool(theirs))

        await until(both_hold, 1, "both hosts holding partitions' entries", 90)
        held = await pending_of(victim)
        killed = time.monotonic()
        first.kill()
        count = sum(map(len, held.values()))
        say(f"  killed functions-1 holding {count} entries of {len(held)} partitions")

        async def taken() -> int:
            still = await pending_of(victim)
            return sum(len(set(ids) - set(still.get(s, []))) for s, ids in held.items())

        await until(taken, count, "entries taken over", 120)
        return time.monotonic() - killed
    finally:
        first.kill()
        second.kill()


async def topic_takeover(stack: Any, deps: Deps, logs: Path) -> float:
    """Seconds from kill -9 of a host owning partitions to another host consuming them."""
    from confluent_kafka import Producer

    bootstrap = deps.settings.kafka_bootstrap
    create_topic(bootstrap, TAKEOVER_TOPIC, 4)
    first = Host(stack, "functions-1", TAKEOVER[1].name, logs)
    second = Host(stack, "functions-2", TAKEOVER[1].name, logs)
    stop = asyncio.Event()

    async def feed() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        n = 0
        while not stop.is_set():
            for part in range(4):
                producer.produce(TAKEOVER_TOPIC, value=str(n).encode(), partition=part)
            n += 1
            producer.poll(0)
            await asyncio.sleep(0.02)
        producer.flush(5)

    feeder = asyncio.create_task(feed())
    try:

        async def owners() -> dict[str, tuple[str, float]]:
            raw: dict[str, str] = await deps.redis.hgetall(OWNERS)  # type: ignore[assignment]
            return {p: (v.split("|")[0], float(v.split("|")[1])) for p, v in raw.items()}

        async def both_own() -> int:
            nodes = {node for node, _ in (await owners()).values()}
            return len(nodes) if len(await owners()) == 4 else 0

        await until(both_own, 2, "both hosts owning partitions", 90)
        await asyncio.sleep(1)
        victims = [p for p, (node, _) in (await owners()).items() if node == "functions-1"]
        killed, killed_at = time.time(), time.monotonic()
        first.kill()
        say(f"  killed functions-1 owning partitions {sorted(victims)}; waiting for functions-2")

        async def moved() -> int:
            now = await owners()
            return sum(1 for p in victims if now[p][0] == "functions-2" and now[p][1] > killed)

        await until(moved, len(victims), "partitions taken over", 120)
        return time.monotonic() - killed_at
    finally:
        stop.set()
        await feeder
        first.kill()
        second.kill()


async def bench(stack: Any, count: int, logs: Path) -> dict[str, float]:
    """Every measurement, in order."""
    deps = deps_for(stack)
    try:
        say(f"[1/6] baseline: raw XREADGROUP + XACK/XDEL of {count} entries")
        raw_stream = await stream_baseline(deps, count)
        say(f"      {raw_stream:,.0f} entries/s")
        say(f"[2/6] message function alone over {count} sends")
        message = await message_alone(deps, count)
        say(f"      {message:,.0f} records/s")
        say(f"[3/6] baseline: raw Kafka consume + commit of {count} records")
        raw_topic = await asyncio.to_thread(topic_baseline, deps.settings.kafka_bootstrap, count)
        say(f"      {raw_topic:,.0f} records/s")
        say(f"[4/6] persist function alone over {count} records")
        persist = await persist_alone(deps, count)
        say(f"      {persist:,.0f} records/s")
        say("[5/6] takeover of stream partitions after kill -9 (partition lease)")
        stream_s = await stream_takeover(stack, deps, logs)
        say(f"      {stream_s:.1f} s")
        say("[6/6] takeover of Kafka partitions after kill -9 (session timeout)")
        topic_s = await topic_takeover(stack, deps, logs)
        say(f"      {topic_s:.1f} s")
    finally:
        await deps.aclose()
    return {
        "raw_stream": raw_stream,
        "message": message,
        "raw_topic": raw_topic,
        "persist": persist,
        "stream_takeover_s": stream_s,
        "topic_takeover_s": topic_s,
    }


def main(argv: list[str] | None = None) -> int:
    """Start private services, measure, print the figures, stop everything."""
    parser = argparse.ArgumentParser(prog="python -m bench.functions", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000, help="records per throughput run")
    args = parser.parse_args(argv)
    message_trigger = REGISTRY["message"].trigger
    assert isinstance(message_trigger, RedisStream)
    with private_stack(SERVICES) as stack:
        logs = stack.state_dir / "logs"
        figures = asyncio.run(bench(stack, args.records, logs))
    say("\n== function runtime on this machine")
    say(
        f"message function: {figures['message']:,.0f} records/s = "
        f"{figures['message'] / figures['raw_stream']:.2f} x raw XREADGROUP+XACK "
        f"({figures['raw_stream']:,.0f}/s)"
    )
    say(
        f"persist function: {figures['persist']:,.0f} records/s = "
        f"{figures['persist'] / figures['raw_topic']:.2f} x raw consume+commit "
        f"({figures['raw_topic']:,.0f}/s)"
    )
    say(
        f"takeover after kill -9: stream partitions {figures['stream_takeover_s']:.1f} s "
        f"(partition lease {PartitionedRunner.LEASE_S:.0f} s), Kafka partitions "
        f"{figures['topic_takeover_s']:.1f} s (session timeout {SESSION_TIMEOUT_MS / 1000:.0f} s)"
    )
    say(json.dumps({k: round(v, 2) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
