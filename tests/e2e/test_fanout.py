"""Per-room fan-out: which nodes carry which rooms, and delivery through Redis and Kafka faults."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import websockets
from realtime_client import Client

from chat import frames, names
from chat.shards import Shards
from devstack import Stack
from tests.support import unique_room, until


@pytest.fixture
def restart_all(full_stack: Stack) -> Iterator[None]:
    """Whatever a test kills, every configured component runs again afterwards."""
    yield
    full_stack.start()


async def _nodes_carrying(shards: Shards, room: str) -> int:
    """How many subscribers (gateway nodes) the room's sharded channel has, on its node."""
    channel = names.room_channel(room)
    node = shards.node(await shards.owner(channel))
    reply = await node.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


async def _eventually_carried_by(shards: Shards, room: str, nodes: int) -> None:
    deadline = time.monotonic() + 10
    while (got := await _nodes_carrying(shards, room)) != nodes:
        if time.monotonic() > deadline:
            pytest.fail(f"room {room} is carried by {got} nodes, expected {nodes}")
        await asyncio.sleep(0.05)


async def test_a_node_carries_exactly_the_rooms_of_its_members(
    full_stack: Stack, clients: list[Client], shards: Shards, restart_all: None
) -> None:
    urls = full_stack.endpoints()["ws_urls"]
    room, other = unique_room(), unique_room()
    ann, cy, bob = Client("ann"), Client("cy"), Client("bob")
    clients += [ann, cy, bob]
    await ann.connect(urls[0])
    await cy.connect(urls[0])
    await bob.connect(urls[1])
    # GIVEN nobody in the room: no node carries it
    assert await _nodes_carrying(shards, room) == 0
    # WHEN members join on node 1, then on node 2
    assert (await ann.call("join", {"room": room}))["ok"] is True
    # THEN the join is acked only once node 1 carries the room
    assert await _nodes_carrying(shards, room) == 1
    assert (await cy.call("join", {"room": room}))["ok"] is True
    assert await _nodes_carrying(shards, room) == 1
    assert (await bob.call("join", {"room": room}))["ok"] is True
    assert await _nodes_carrying(shards, room) == 2
    assert (await bob.call("join", {"room": other}))["ok"] is True
    # WHEN one of node 1's two members leaves, node 1 still carries the room
    assert (await ann.call("leave", {"room": room}))["ok"] is True
    await asyncio.sleep(0.2)
    assert await _nodes_carrying(shards, room) == 2
    # WHEN the last one disconnects, it no longer does
    await cy.close()
    await _eventually_carried_by(shards, room, 1)
    # WHEN node 2 dies with SIGKILL, its rooms are carried by nobody
    full_stack.kill("gateway-2", signal.SIGKILL)
    await _eventually_carried_by(shards, room, 0)
    await _eventually_carried_by(shards, other, 0)


async def _pair_in_room(
    stack: Stack, clients: list[Client], prefix: str
) -> tuple[str, Client, Client]:
    """ann on node 1 and bob on node 2, both members of a new room."""
    urls = stack.endpoints()["ws_urls"]
    room = unique_room(prefix)
    ann, bob = Client("ann"), Client("bob")
    clients += [ann, bob]
    await ann.connect(urls[0])
    await bob.connect(urls[1])
    for c in (ann, bob):
        assert (await c.call("join", {"room": room}))["ok"] is True
    return room, ann, bob


async def _send_all(sender: Client, room: str, texts: list[str], acked: dict[str, float]) -> None:
    """Send each text, retrying the same client_msg_id until it is acked (Redis may be down)."""
    for text in texts:
        cid = f"c-{text}"
        while True:
            try:
                ack = await sender.call(
                    "send", {"room": room, "text": text, "client_msg_id": cid}, timeout=5
                )
            except Exception:
                ack = {"ok": False}
            if ack.get("ok"):
                acked[text] = time.monotonic()
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.02)


def _texts(client: Client, room: str) -> list[str]:
    return [m["text"] for m in client.got("message", room)]


@pytest.mark.standalone
async def test_a_redis_restart_under_load_leaves_no_silent_gap(
    full_stack: Stack, clients: list[Client], restart_all: None
) -> None:
    room, ann, bob = await _pair_in_room(full_stack, clients, "redis")
    texts = [f"m{i:03d}" for i in range(120)]
    acked: dict[str, float] = {}
    # GIVEN a steady stream of sends into the room
    sending = asyncio.create_task(_send_all(ann, room, texts, acked))
    await until(lambda: len(acked) >= 30, "the first sends acked")
    # WHEN Redis is killed and comes back while they flow
    full_stack.kill("redis", signal.SIGKILL)
    await asyncio.sleep(1.0)
    full_stack.start(["redis"])
    await asyncio.wait_for(sending, timeout=90)
    # THEN every member got every message once, with contiguous seqs, in order
    for member in (ann, bob):
        await until(lambda m=member: len(m.got("message", room)) >= len(texts), "all delivered", 30)
        assert sorted(_texts(member, room)) == texts, f"{member.user} lost or duplicated some"
        assert member.seqs(room) == list(range(1, len(texts) + 1)), f"gap at {member.user}"


async def test_live_chat_goes_on_while_kafka_is_down_and_history_completes_after(
    full_stack: Stack, clients: list[Client], restart_all: None
) -> None:
    points = full_stack.endpoints()
    room, ann, bob = await _pair_in_room(full_stack, clients, "kafka")
    before = [f"b{i:02d}" for i in range(10)]
    during = [f"d{i:02d}" for i in range(60)]
    acked: dict[str, float] = {}
    await _send_all(ann, room, before, acked)
    await until(lambda: len(bob.got("message", room)) == len(before), "delivery before")

    # WHEN the broker dies with SIGKILL and messages keep being sent
    full_stack.kill("kafka", signal.SIGKILL)
    await _send_all(ann, room, during, acked)
    # THEN they all reach the other node's member while the broker is still down
    await until(lambda: len(bob.got("message", room)) == len(before) + len(during), "live", 10)
    assert full_stack.endpoints()["pids"].get("kafka") is None, "kafka came back by itself"
    assert bob.seqs(room) == list(range(1, len(before) + len(during) + 1))

    # WHEN the broker returns, history holds every message once, in order
    full_stack.start(["kafka"])
    wanted = before + during
    async with httpx.AsyncClient(base_url=points["http_url"], timeout=10) as http:
        deadline = time.monotonic() + 90
        while True:
            page = (
                await http.get(
                    f"/rooms/{room}/messages",
                    params={"limit": 200, "after_seq": 0},
                    headers={"X-User": "bob"},
                )
            ).json()
            stored = [m["text"] for m in page.get("messages", []) if m["seq"] <= len(wanted)]
            rows = await _stored_count(full_stack, room)
            if rows == len(wanted):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{rows} of {len(wanted)} messages stored after 90s")
            await asyncio.sleep(0.5)
    assert stored == wanted


async def _stored_count(stack: Stack, room: str) -> int:
    """Rows of the room in PostgreSQL (history alone would also serve the recent log)."""
    async with await psycopg.AsyncConnection.connect(stack.postgres_dsn) as conn:
        cur = await conn.execute("SELECT count(*) FROM messages WHERE room = %s", (room,))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _raw_frames(url: str, user: str, room: str, count: int) -> list[str]:
    """A bare WebSocket speaking Engine.IO v4 / Socket.IO v5: join, then the next text frames."""
    host = url.split("//", 1)[1]
    async with websockets.connect(
        f"ws://{host}/socket.io/?EIO=4&transport=websocket", compression=None
    ) as ws:
        assert str(await ws.recv()).startswith("0")
        await ws.send("40" + json.dumps({"user": user}))
        assert str(await ws.recv()).startswith("40")
        await ws.send("421" + json.dumps(["join", {"room": room}]))
        got: list[str] = []
        async with asyncio.timeout(20):
            while len(got) < count:
                frame = str(await ws.recv())
                if frame == "2":
                    await ws.send("3")
                elif frame.startswith('42["message"'):
                    got.append(frame)
        return got


async def test_a_member_receives_the_pinned_socketio_frame_of_each_message(
    full_stack: Stack, clients: list[Client], shards: Shards
) -> None:
    urls = full_stack.endpoints()["ws_urls"]
    room = unique_room("wire")
    sender = Client("ann")
    clients.append(sender)
    await sender.connect(urls[0])
    assert (await sender.call("join", {"room": room}))["ok"] is True
    # GIVEN a bare WebSocket member on the other node
    listening = asyncio.create_task(_raw_frames(urls[1], "bob", room, 2))
    await _eventually_carried_by(shards, room, 2)
    # WHEN two messages are sent
    await _send_all(sender, room, ["one", 'two "quoted" ünï'], {})
    frames_seen = await listening
    # THEN each arrives as exactly one Engine.IO MESSAGE of a Socket.IO EVENT whose argument is
    # the message's JSON as the recent log holds it, byte for byte
    logged = await shards.client.xrange(names.recent_log_key(room))
    assert frames_seen == [
        "4" + frames.event_packet("message", fields[frames.LOG_FIELD]) for _, fields in logged
    ]
    # AND a python-socketio client decodes the same frames into the contract's message
    await until(lambda: len(sender.seqs(room)) >= 2, "both messages at their sender")
    assert [m["text"] for m in sender.got("message", room)] == ["one", 'two "quoted" ünï']
