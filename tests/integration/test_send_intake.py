"""Batched send intake on real Redis: a refused send is never appended, an accepted one once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chat.ratelimit import Limit, RateLimiter
from devstack import Stack
from realtime.intake import SendIntake

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(stack.env()["CHAT_REDIS_URL"], decode_responses=True)
    yield client
    await client.aclose()


async def test_concurrent_sends_share_round_trips_and_keep_the_limits(
    redis: aioredis.Redis,
) -> None:
    # GIVEN a per-user budget of 5 at once, and a private stream
    stream = f"test:intake:{uuid.uuid4().hex}"
    user = f"u-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(redis, {("send", "user"): Limit(per_s=0.001, burst=5)})
    intake = SendIntake(limiter, stream)
    try:
        # WHEN 20 sends arrive at once, from two sockets of the same user
        waits = await asyncio.gather(
            *(intake.accept(user, f"s{i % 2}", {"n": str(i)}) for i in range(20))
        )
    finally:
        await intake.aclose()
    # THEN exactly the first 5 are accepted, in arrival order, and only they are appended
    assert [w == 0 for w in waits] == [True] * 5 + [False] * 15
    assert all(w > 0 for w in waits[5:])
    entries = await redis.xrange(stream)
    assert [fields["n"] for _, fields in entries] == [str(i) for i in range(5)]
    await redis.delete(stream)


async def test_a_redis_failure_fails_every_send_of_the_batch_and_appends_none() -> None:
    broken = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    intake = SendIntake(RateLimiter(broken, {}), "test:intake:never")
    try:
        results = await asyncio.gather(
            *(intake.accept("u", "s", {"n": "1"}) for _ in range(3)), return_exceptions=True
        )
    finally:
        await intake.aclose()
        await broken.aclose()
    assert all(isinstance(r, aioredis.ConnectionError) for r in results)
