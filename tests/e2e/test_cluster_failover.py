"""Redis Cluster failover under load: a primary killed with SIGKILL loses no acked message."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from realtime_client import Client

from chat import names
from chat.shards import Shards
from devstack import Stack
from tests.support import unique_room, until

pytestmark = pytest.mark.cluster

ROOMS = 6
MESSAGES = 180


@pytest.fixture
def restart_all(full_stack: Stack) -> Iterator[None]:
    """The killed node comes back (as a replica) whatever the test's outcome."""
    yield
    full_stack.start()


def _node_named(stack: Stack, address: str) -> str:
    for node in stack.endpoints()["redis_nodes"]:
        parts = urlsplit(node["url"])
        if f"{parts.hostname}:{parts.port}" == address:
            return str(node["name"])
    raise AssertionError(f"no node of endpoints.json listens on {address}")


async def test_a_primary_killed_under_load_loses_no_acked_message_and_repeats_no_seq(
    full_stack: Stack, clients: list[Client], shards: Shards, restart_all: None
) -> None:
    urls = full_stack.endpoints()["ws_urls"]
    rooms = [unique_room("fo") for _ in range(ROOMS)]
    ann, bob = Client("ann"), Client("bob")
    clients += [ann, bob]
    await ann.connect(urls[0])
    await bob.connect(urls[1])
    for client in (ann, bob):
        for room in rooms:
            assert (await client.call("join", {"room": room}))["ok"] is True
    # The primary that owns the first room's slot dies: its room keys, its channel and
    # whatever inbound partitions it holds move to its replica.
    victim = _node_named(full_stack, await shards.owner(names.room_channel(rooms[0])))

    acked: dict[str, tuple[str, str]] = {}  # text -> (room, message id)
    stalls: list[float] = []

    async def send_all() -> None:
        for n in range(MESSAGES):
            room, text = rooms[n % ROOMS], f"m{n:04d}"
            started = time.monotonic()
            while True:  # what a client does: the same client_msg_id until acked
                try:
                    ack = await ann.call(
                        "send", {"room": room, "text": text, "client_msg_id": text}, timeout=5
                    )
                except Exception:
                    ack = {"ok": False}
                if ack.get("ok"):
                    acked[text] = (room, str(ack["id"]))
                    break
                await asyncio.sleep(0.1)
            stalls.append(time.monotonic() - started)
            await asyncio.sleep(0.03)

    # GIVEN a steady stream of sends into rooms spread over the cluster's shards
    sending = asyncio.create_task(send_all())
    await until(lambda: len(acked) >= 40, "the first sends acked", 30)
    # WHEN a primary is killed with SIGKILL while they flow
    killed_at = time.monotonic()
    full_stack.kill(victim, signal.SIGKILL)
    await asyncio.wait_for(sending, timeout=120)
    print(
        f"failover: {victim} killed; longest send stall {max(stalls):.1f} s, "
        f"all {MESSAGES} acked {time.monotonic() - killed_at:.1f} s after the kill"
    )

    # THEN every member got every acked message exactly once, seqs contiguous, none repeated
    for member in (ann, bob):
        for room in rooms:
            wanted = sorted(t for t, (r, _) in acked.items() if r == room)
            await until(
                lambda m=member, r=room, w=wanted: len(m.got("message", r)) >= len(w),
                f"{member.user} receiving all of {room}",
                30,
            )
            got = member.got("message", room)
            assert sorted(m["text"] for m in got) == wanted, f"{member.user} lost or doubled"
            assert member.seqs(room) == list(range(1, len(wanted) + 1)), f"gap at {member.user}"
            assert {m["id"] for m in got} == {acked[t][1] for t in wanted}

    # AND PostgreSQL holds each message once, with the seq its members saw
    live = {m["id"]: m["seq"] for room in rooms for m in bob.got("message", room)}
    deadline = time.monotonic() + 60
    while True:
        async with await psycopg.AsyncConnection.connect(full_stack.postgres_dsn) as conn:
            cur = await conn.execute(
                "SELECT id::text, seq FROM messages WHERE room = ANY(%s)", (rooms,)
            )
            rows = await cur.fetchall()
        stored = {str(i): int(seq) for i, seq in rows}
        if len(rows) >= len(live) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(rows) == len(stored) and stored == live
