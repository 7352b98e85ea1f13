"""Batched send intake on real Redis: a refused send is never appended, an accepted one once."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from chat import names
from chat.ratelimit import Limit, RateLimiter
from chat.settings import Settings
from chat.shards import Shards
from realtime.intake import SendIntake


async def test_concurrent_sends_share_round_trips_and_keep_the_limits(shards: Shards) -> None:
    # GIVEN a per-user budget of 5 at once, and a private stream family
    base = f"test:intake:{uuid.uuid4().hex}"
    user = f"u-{uuid.uuid4().hex[:8]}"
    room = f"r-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(shards, {("send", "user"): Limit(per_s=0.001, burst=5)})
    intake = SendIntake(limiter, shards, shards.settings, stream=base)
    try:
        # WHEN 20 sends to one room arrive at once, from two sockets of the same user
        waits = await asyncio.gather(
            *(intake.accept(user, f"s{i % 2}", {"room": room, "n": str(i)}) for i in range(20))
        )
    finally:
        await intake.aclose()
    # THEN exactly the first 5 are accepted, in arrival order, and only they are appended, to
    # the room's partition
    assert [w == 0 for w in waits] == [True] * 5 + [False] * 15
    assert all(w > 0 for w in waits[5:])
    stream = names.partition(base, names.partition_of(room, shards.settings.inbound_partitions))
    assert intake.partition(room) == stream
    entries = await shards.client.xrange(stream)
    assert [fields["n"] for _, fields in entries] == [str(i) for i in range(5)]
    await shards.client.delete(stream)


async def test_rooms_spread_over_the_partitions_and_keep_their_order(shards: Shards) -> None:
    # GIVEN no limits and many rooms (fixed names: 40 random ones leave one of 8 partitions
    # unused about once in 25 runs; the streams are the test's own, so names may repeat)
    base = f"test:intake:{uuid.uuid4().hex}"
    intake = SendIntake(RateLimiter(shards, {}), shards, shards.settings, stream=base)
    rooms = [f"r{i}" for i in range(40)]
    try:
        # WHEN each room gets three sends, interleaved
        for n in range(3):
            fields = [{"room": r, "n": str(n)} for r in rooms]
            await asyncio.gather(*(intake.accept("u", "s", f) for f in fields))
    finally:
        await intake.aclose()
    # THEN every partition is used, and within a partition each room's sends are in order
    count = shards.settings.inbound_partitions
    used = {names.partition_of(r, count) for r in rooms}
    assert used == set(range(count))
    for p in range(count):
        entries = await shards.client.xrange(names.partition(base, p))
        by_room: dict[str, list[str]] = {}
        for _, fields in entries:
            assert names.partition_of(fields["room"], count) == p
            by_room.setdefault(fields["room"], []).append(fields["n"])
        assert all(ns == ["0", "1", "2"] for ns in by_room.values())
        await shards.client.delete(names.partition(base, p))


async def test_a_redis_failure_fails_every_send_of_the_batch_and_appends_none() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    broken = aioredis.from_url(settings.redis_url, socket_connect_timeout=0.5)
    shards = Shards(settings, broken)
    intake = SendIntake(RateLimiter(shards, {}), shards, settings, stream="test:intake:never")
    try:
        results = await asyncio.gather(
            *(intake.accept("u", "s", {"room": "r", "n": "1"}) for _ in range(3)),
            return_exceptions=True,
        )
    finally:
        await intake.aclose()
        await broken.aclose()
    assert all(isinstance(r, aioredis.ConnectionError) for r in results)
