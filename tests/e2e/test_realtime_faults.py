"""A gateway killed with SIGKILL: its users leave presence in bounded time, its clients recover."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest
from realtime_client import Client

from chat import names
from chat.clients import redis_client
from chat.settings import Settings
from devstack import Stack
from tests.support import unique_room, until

# A dead node's members linger at most one TTL after its last heartbeat plus one surviving
# heartbeat to notice; a second of slack for scheduling on a busy machine.
SETTINGS = Settings()
PRESENCE_BOUND_S = SETTINGS.presence_ttl_s + SETTINGS.presence_heartbeat_s + 1


@pytest.fixture
def restart_gateways(full_stack: Stack) -> Iterator[None]:
    """Whatever a test kills, every configured gateway runs again afterwards."""
    yield
    full_stack.start([f"gateway-{i}" for i in range(1, full_stack.gateways + 1)])


async def test_users_of_a_killed_node_leave_presence_within_the_bound(
    full_stack: Stack, clients: list[Client], restart_gateways: None
) -> None:
    urls = full_stack.endpoints()["ws_urls"]
    room = unique_room()
    ann, bob, cy = Client("ann"), Client("bob"), Client("cy")
    clients += [ann, bob, cy]
    await ann.connect(urls[0])
    await bob.connect(urls[1])
    await cy.connect(urls[1])
    for c in (ann, bob, cy):
        assert (await c.call("join", {"room": room}))["ok"] is True
    await until(lambda: ann.users(room) == ["ann", "bob", "cy"], "everyone present at ann")

    # WHEN the node holding bob and cy dies without a word
    killed_at = time.monotonic()
    full_stack.kill("gateway-2", signal.SIGKILL)

    # THEN ann learns they are gone, within the bound
    await until(lambda: ann.users(room) == ["ann"], "bob and cy gone", PRESENCE_BOUND_S + 5)
    took = time.monotonic() - killed_at
    assert took <= PRESENCE_BOUND_S, f"{took:.1f}s > {PRESENCE_BOUND_S}s"


async def test_a_client_of_a_killed_node_recovers_through_the_load_balancer(
    full_stack: Stack, clients: list[Client], restart_gateways: None
) -> None:
    points = full_stack.endpoints()
    room = unique_room()
    ann, bob = Client("ann"), Client("bob")
    clients += [ann, bob]
    await ann.connect(points["ws_urls"][0])
    await bob.connect(points["ws_urls"][1])
    for c in (ann, bob):
        await c.call("join", {"room": room})

    sent: list[int] = []
    stop = asyncio.Event()

    async def converse() -> None:
        """Ann keeps talking on the surviving node, before, during and after the crash."""
        i = 0
        while not stop.is_set() or i < 10:
            ack = await ann.call("send", {"room": room, "text": f"m{i}", "client_msg_id": f"m{i}"})
            assert ack["ok"] is True, ack
            sent.append(i)
            i += 1
            await asyncio.sleep(0.1)

    talking = asyncio.create_task(converse())
    try:
        await until(lambda: len(bob.seqs(room)) >= 5, "bob in the conversation")
        # WHEN bob's node is killed mid-conversation
        full_stack.kill("gateway-2", signal.SIGKILL)
        await until(lambda: not bob.sio.connected, "bob to notice", 30)
        await asyncio.sleep(0.5)  # the conversation goes on while bob is away
        seen = bob.seqs(room)
        last = seen[-1]

        # THEN bob reconnects through the load balancer and rejoins from the last seq he saw
        deadline = time.monotonic() + 20
        while True:
            try:
                await bob.connect(points["entry_url"])
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        ack = await bob.call("join", {"room": room, "since_seq": last})
        assert ack["ok"] is True and "gap" not in ack, ack
    finally:
        stop.set()
        await talking
    total = len(sent)
    await until(lambda: len(bob.seqs(room)) >= total, f"all {total} messages at bob")
    await asyncio.sleep(0.3)
    # No gap and no duplicate, across both connections.
    assert bob.seqs(room) == list(range(1, total + 1))
    assert ann.seqs(room) == list(range(1, total + 1))


async def test_a_rejoin_from_a_seq_the_log_no_longer_holds_reports_a_gap(
    full_stack: Stack, clients: list[Client]
) -> None:
    room = unique_room()
    ann = Client("ann")
    clients.append(ann)
    await ann.connect(full_stack.endpoints()["ws_urls"][0])
    await ann.call("join", {"room": room})
    for i in range(3):
        await ann.call("send", {"room": room, "text": f"t{i}", "client_msg_id": f"t{i}"})
    await until(lambda: len(ann.seqs(room)) == 3, "three messages")
    # Trim the room's recent log as its cap would, keeping the newest entry only.
    redis = redis_client(Settings.from_env(full_stack.env()))
    try:
        await redis.xtrim(names.recent_log_key(room), maxlen=1, approximate=False)
    finally:
        await redis.aclose()
    late = Client("late")
    clients.append(late)
    await late.connect(full_stack.endpoints()["ws_urls"][1])
    ack = await late.call("join", {"room": room, "since_seq": 0})
    assert ack == {
        "ok": True,
        "room": room,
        "last_seq": 3,
        "last_read_seq": 0,
        "unread": 3,
        "gap": True,
    }
    assert late.seqs(room) == [3]
