"""Hosts crash, join, leave and stop under load: every message takes effect exactly once.

The real message and persist functions run end to end (inbound stream -> seq, recent log,
Kafka -> PostgreSQL) in function-host processes, on an inbound stream of each test's own.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import psycopg
import pytest

from chat import inbound, names
from chat.contract import SendRequest
from functions.deps import Deps
from tests.integration import runtime_handlers as rt
from tests.integration.runtime_support import Hosts
from tests.support import until

pytestmark = pytest.mark.timeout(180)

PIPELINE = ["message", "persist"]
TS = "2026-11-28T10:00:00.000Z"


class Load:
    """Sends to a few rooms of the test's own, with some re-sends, and knows what must result."""

    def __init__(self, deps: Deps, test_id: str, rooms: int = 6) -> None:
        self.deps = deps
        self.stream = rt.inbound_name(test_id)
        self.rooms = [f"rt-{test_id}-{i}" for i in range(rooms)]
        self.expected: dict[str, set[str]] = {room: set() for room in self.rooms}
        self._n = itertools.count()

    async def send(self, count: int, resend_every: int = 25) -> None:
        """XADD ``count`` sends as gateways would; every ``resend_every``-th is sent twice."""
        async with self.deps.redis.pipeline(transaction=False) as pipe:
            for _ in range(count):
                n = next(self._n)
                room = self.rooms[n % len(self.rooms)]
                request = SendRequest(room=room, text=f"message {n}", client_msg_id=f"c{n}")
                fields = inbound.send_entry(request, sender=f"user{n % 3}", ts=TS)
                pipe.xadd(self.stream, fields)  # type: ignore[arg-type]
                if n % resend_every == 0:
                    pipe.xadd(self.stream, fields)  # type: ignore[arg-type]
                self.expected[room].add(f"c{n}")
            await pipe.execute()

    async def sequenced(self) -> int:
        """How many seqs were assigned so far, over all rooms."""
        # One GET per room: on a cluster the rooms' keys live in different slots.
        values = await asyncio.gather(*(self.deps.redis.get(names.seq_key(r)) for r in self.rooms))
        return sum(int(v or 0) for v in values)

    async def persisted(self) -> int:
        """How many rows the rooms have in PostgreSQL."""
        async with await psycopg.AsyncConnection.connect(self.deps.settings.postgres_dsn) as c:
            cur = await c.execute(
                "SELECT count(*) FROM messages WHERE room = ANY(%s)", (self.rooms,)
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def wait_all_persisted(self, timeout_s: float) -> None:
        """Until every distinct message of the load is a row."""
        want = sum(len(ids) for ids in self.expected.values())

        async def done() -> bool:
            return await self.persisted() >= want

        await until(done, f"{want} rows", timeout_s, every_s=0.5)

    async def assert_exactly_once(self) -> None:
        """One row and one seq per message; per room, seqs run 1..n with no gap or repeat."""
        async with await psycopg.AsyncConnection.connect(self.deps.settings.postgres_dsn) as c:
            for room, ids in self.expected.items():
                cur = await c.execute(
                    "SELECT seq, client_msg_id FROM messages WHERE room = %s ORDER BY seq", (room,)
                )
                rows = await cur.fetchall()
                assert [seq for seq, _ in rows] == list(range(1, len(ids) + 1)), room
                assert sorted(cid for _, cid in rows) == sorted(ids), room
                # No second seq: the room's counter never went past its messages.
                assert int(await self.deps.redis.get(names.seq_key(room)) or 0) == len(ids)
                log = await self.deps.redis.xrange(names.recent_log_key(room))
                assert len(log) == len(ids), room


async def test_kill_9_mid_batch_loses_nothing_and_duplicates_no_effect(
    deps: Deps, hosts: Hosts, test_id: str
) -> None:
    # GIVEN a backlog of sends and one host working through it
    load = Load(deps, test_id)
    await load.send(1500)
    first = hosts.start("functions-a", PIPELINE)

    async def under_way() -> bool:
        return await load.sequenced() >= 300

    await until(under_way, "the first host to be under way", 30, every_s=0.01)
    # WHEN it is killed in the middle of its work
    first.kill()
    assert await load.sequenced() < 1500, "the host finished before it could be killed"
    # AND another host takes over
    hosts.start("functions-b", PIPELINE)
    # THEN every message ends as exactly one row with one seq
    await load.wait_all_persisted(90)
    await asyncio.sleep(1)  # room for a late duplicate to show
    await load.assert_exactly_once()


async def test_a_host_joins_and_one_leaves_under_steady_load(
    deps: Deps, hosts: Hosts, test_id: str
) -> None:
    load = Load(deps, test_id)
    first = hosts.start("functions-a", PIPELINE, grace_s=10)
    started = time.monotonic()
    left = False
    # GIVEN steady load (about 250 sends/s for 10 s)
    for tick in range(50):
        await load.send(50)
        if tick == 15:
            # WHEN a host joins ...
            joined = hosts.start("functions-b", PIPELINE, wait=False)
        if tick == 32 and not left:
            # ... and, once it is up, the first one leaves
            await asyncio.to_thread(joined.wait_healthy)
            took = await asyncio.to_thread(first.terminate, 15)
            assert took < 13
            left = True
        await asyncio.sleep(max(0.0, started + (tick + 1) * 0.2 - time.monotonic()))
    # THEN nothing is lost and nothing takes effect twice
    await load.wait_all_persisted(90)
    await asyncio.sleep(1)
    await load.assert_exactly_once()


async def test_sigterm_under_load_exits_within_its_bound_and_loses_nothing(
    deps: Deps, hosts: Hosts, test_id: str
) -> None:
    load = Load(deps, test_id)
    grace = 5.0
    first = hosts.start("functions-a", PIPELINE, grace_s=grace)
    # GIVEN a host under load
    for _ in range(10):
        await load.send(100)
        await asyncio.sleep(0.1)
    # WHEN it gets SIGTERM with sends still arriving
    sender = asyncio.create_task(load.send(500))
    took = await asyncio.to_thread(first.terminate, grace + 10)
    await sender
    # THEN it exits within its bound (grace plus leaving the consumer group)
    assert took < grace + 4, f"took {took:.1f}s"
    # AND a host started afterwards finishes everything, each message once
    hosts.start("functions-b", PIPELINE)
    await load.wait_all_persisted(90)
    await asyncio.sleep(1)
    await load.assert_exactly_once()


async def test_an_idle_host_stops_at_once_on_sigterm(hosts: Hosts) -> None:
    # GIVEN a healthy host with nothing in flight and a long grace period
    grace = 20.0
    host = hosts.start("functions-idle", PIPELINE, grace_s=grace)
    # WHEN it gets SIGTERM
    took = await asyncio.to_thread(host.terminate, grace + 10)
    # THEN nothing waits out the grace period: leaving the Kafka group is all there is to do
    assert took < 5, f"an idle host took {took:.1f}s to stop"
