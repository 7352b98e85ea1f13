"""Runtime failure semantics on real Redis and Kafka: poison, partial failure, timeouts, replay."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from devstack import Stack
from functions.deps import Deps
from functions.runtime.dead_letters import list_dead_letters
from tests.integration import runtime_handlers as rt
from tests.integration.runtime_support import REGISTRY, REPO, HostProcess, Hosts, create_topics
from tests.support import until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def host(stack: Stack, test_id: str, hosts: Hosts) -> HostProcess:
    create_topics(stack, {rt.topic_name(test_id): 2, rt.topic_dead_letter(test_id): 1})
    return hosts.start("functions-rt", ["rt-stream", "rt-topic"])


def _function(test_id: str, name: str) -> rt.Function:
    return next(f for f in rt.functions_for(test_id) if f.name == name)


def _cli(stack: Stack, test_id: str, *args: str) -> str:
    env = {**stack.env(), "RUNTIME_TEST_ID": test_id, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "functions", "--registry", REGISTRY, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_poison_entry_is_dead_lettered_and_a_failed_one_retried_alone(
    stack: Stack, deps: Deps, host: HostProcess, test_id: str
) -> None:
    # GIVEN a room's worth of entries, one poison and one failing its first attempt
    keys = [f"k{i:02d}" for i in range(30)]
    modes = {"k05": "poison", "k17": "flaky"}
    for key in keys:
        fields = {"key": key, "lane": "room"}
        if key in modes:
            fields["mode"] = modes[key]
        await deps.redis.xadd(rt.stream_name(test_id), fields)  # type: ignore[arg-type]

    # WHEN the host works through them
    async def all_done() -> bool:
        return int(await deps.redis.hlen(rt.seen_key(test_id))) == len(keys) - 1

    await until(all_done, "every good entry to be processed", 30)

    # THEN each good entry was completed once, in order but for the retried one
    seen = await deps.redis.hgetall(rt.seen_key(test_id))
    assert seen == {k: "1" for k in keys if k != "k05"}
    order = await deps.redis.lrange(rt.order_key(test_id, "room"), 0, -1)
    assert [k for k in order if k != "k17"] == [k for k in keys if k not in modes]
    # AND the poison entry sits in the dead-letter stream with its error, acked and deleted
    dead = await deps.redis.xrange(rt.stream_dead_letter(test_id))
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["key"] == "k05"
    assert fields["_error"] == "poison record k05"
    assert fields["_attempts"] == "1"
    assert fields["_function"] == "rt-stream"
    info = await deps.redis.xinfo_groups(rt.stream_name(test_id))
    assert info[0]["pending"] == 0
    assert await deps.redis.xlen(rt.stream_name(test_id)) == 0
    # AND the CLI lists it
    listed = [
        json.loads(line)
        for line in _cli(stack, test_id, "dead-letters", "list", "rt-stream").splitlines()
    ]
    assert [(d["source"], d["error"]) for d in listed] == [
        (fields["_source_id"], "poison record k05")
    ]


async def test_a_handler_past_its_timeout_is_retried_then_dead_lettered(
    deps: Deps, host: HostProcess, test_id: str
) -> None:
    # GIVEN an entry the handler never finishes within its 0.5 s timeout
    await deps.redis.xadd(rt.stream_name(test_id), {"key": "slow", "mode": "slow"})

    async def dead_lettered() -> bool:
        return int(await deps.redis.xlen(rt.stream_dead_letter(test_id))) == 1

    # THEN it is tried max_attempts (3) times, then dead-lettered with the timeout as error
    await until(dead_lettered, "the slow entry to be dead-lettered", 30)
    ((_, fields),) = await deps.redis.xrange(rt.stream_dead_letter(test_id))
    assert fields["_attempts"] == "3"
    assert "timed out" in fields["_error"]
    # AND the stream flows on
    await deps.redis.xadd(rt.stream_name(test_id), {"key": "after"})

    async def flowed() -> bool:
        return await deps.redis.hget(rt.seen_key(test_id), "after") == "1"

    await until(flowed, "the next entry to be processed", 10)


async def test_a_fixed_dead_letter_replays_through_the_cli(
    stack: Stack, deps: Deps, host: HostProcess, test_id: str
) -> None:
    # GIVEN an entry that was poison until a fix, dead-lettered
    await deps.redis.xadd(rt.stream_name(test_id), {"key": "b1", "mode": "broken"})

    async def dead_lettered() -> bool:
        return int(await deps.redis.xlen(rt.stream_dead_letter(test_id))) == 1

    await until(dead_lettered, "the broken entry to be dead-lettered", 15)
    # WHEN the fix lands and the dead letters are replayed
    await deps.redis.set(rt.fixed_key(test_id), "1")
    assert "replayed 1 " in _cli(stack, test_id, "dead-letters", "replay", "rt-stream", "--all")

    # THEN it is processed once and the dead-letter stream is empty
    async def processed() -> bool:
        return await deps.redis.hget(rt.seen_key(test_id), "b1") == "1"

    await until(processed, "the replayed entry to be processed", 15)
    assert await deps.redis.xlen(rt.stream_dead_letter(test_id)) == 0


async def test_a_poison_record_leaves_its_partition_flowing_and_a_slow_one_times_out(
    stack: Stack, deps: Deps, host: HostProcess, test_id: str
) -> None:
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    topic = rt.topic_name(test_id)
    # GIVEN 20 records in partition 0, one of them poison
    keys = [f"p{i:02d}" for i in range(20)]
    for key in keys:
        value = {"key": key, "mode": "poison"} if key == "p04" else {"key": key}
        producer.produce(topic, json.dumps(value).encode(), partition=0)
    producer.flush(10)

    async def all_done() -> bool:
        return int(await deps.redis.hlen(rt.seen_key(test_id))) == len(keys) - 1

    # THEN the rest of the partition is processed once each, in order
    await until(all_done, "every good record to be processed", 45)
    order = await deps.redis.lrange(rt.order_key(test_id, "0"), 0, -1)
    assert order == [k for k in keys if k != "p04"]
    fn = _function(test_id, "rt-topic")
    letters = await list_dead_letters(fn, deps)
    assert [(d.error, d.attempts, d.source) for d in letters] == [
        ("poison record p04", 1, f"{topic}/0/4")
    ]

    # WHEN a record stalls past the timeout
    producer.produce(topic, json.dumps({"key": "s", "mode": "slow"}).encode(), partition=1)
    producer.flush(10)

    async def two_letters() -> bool:
        return len(await list_dead_letters(fn, deps)) == 2

    # THEN it is retried, dead-lettered after 3 attempts, and its partition goes on
    await until(two_letters, "the slow record to be dead-lettered", 30, every_s=1)
    slow = (await list_dead_letters(fn, deps))[1]
    assert slow.attempts == 3 and "timed out" in slow.error
    producer.produce(topic, json.dumps({"key": "after"}).encode(), partition=1)
    producer.flush(10)

    async def flowed() -> bool:
        return await deps.redis.hget(rt.seen_key(test_id), "after") == "1"

    await until(flowed, "the next record to be processed", 15)
