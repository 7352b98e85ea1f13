"""Every resource a client can make a gateway hold is bounded, and the abuser alone pays.

One extra gateway node joins the test stack with small limits (the same code and the same Redis
as the stack's own nodes), so each limit is reached in a few hundred packets.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import socketio
import websockets
from realtime_client import Client, RawSocket

from chat.settings import Settings
from devstack import Stack
from tests.support import unique_room, until

LIMITS = {
    "CHAT_MAX_OUTBOUND_PACKETS": "40",
    "CHAT_MAX_REPLAY_MESSAGES": "10",
    "CHAT_MAX_SOCKETS_PER_USER": "3",
    "CHAT_CONNECT_TIMEOUT_S": "2",
    "CHAT_PRESENCE_COALESCE_MS": "500",
    "CHAT_RATE_LIMITS": Settings()
    .rate_limits.replace("replay.user=10:200", "replay.user=0.2:5")
    .replace("leave.socket=20:100", "leave.socket=0.2:5")
    .replace("connect.user=10:60", "connect.user=0.2:6"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def limited_url(full_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway node of the stack started with the small limits above."""
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("limited")) / "gateway.log"
    env = {
        **os.environ,
        **full_stack.env(),
        **LIMITS,
        "CHAT_NODE_ID": f"limited-{uuid.uuid4().hex[:6]}",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "realtime", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the limited gateway did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
        assert proc.poll() is None, f"the limited gateway died:\n{log.read_text()[-3000:]}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def raws() -> AsyncIterator[list[RawSocket]]:
    """Raw sockets a test opens; all aborted afterwards."""
    made: list[RawSocket] = []
    yield made
    for r in made:
        await r.close()


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics/", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _name(prefix: str) -> str:
    """A user name of this test alone: rate-limit buckets are per user and shared by all nodes,
    and this node spends them at its own (smaller) rates."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def _joined(made: list[Client], url: str, prefix: str, room: str) -> Client:
    """A new user's socket, in ``room``."""
    return await _joined_as(made, url, _name(prefix), room)


async def _joined_as(made: list[Client], url: str, user: str, room: str) -> Client:
    c = Client(user)
    made.append(c)
    await c.connect(url)
    ack = await c.call("join", {"room": room})
    assert ack["ok"] is True, ack
    return c


async def _send_all(senders: list[Client], room: str, n: int, text: str) -> list[str]:
    """Each sender sends ``n`` messages concurrently with the others; all must be accepted."""

    batch = uuid.uuid4().hex[:8]

    async def one(c: Client) -> list[str]:
        ids = []
        for i in range(n):
            msg = {"room": room, "text": text, "client_msg_id": f"{batch}-{i}"}
            ack = await c.call("send", msg)
            assert ack["ok"] is True, ack
            ids.append(ack["id"])
        return ids

    batches = await asyncio.gather(*(one(c) for c in senders))
    return [i for batch in batches for i in batch]


async def test_a_client_that_stops_reading_is_cut_off_and_nobody_waits(
    full_stack: Stack, limited_url: str, clients: list[Client], raws: list[RawSocket]
) -> None:
    url0 = full_stack.endpoints()["ws_urls"][0]
    room = unique_room("slow")
    ann = await _joined(clients, url0, "ann", room)
    bob = await _joined(clients, limited_url, "bob", room)
    senders = [await _joined(clients, url0, f"s{i}", room) for i in range(20)]
    # GIVEN a client on bob's node that joins the busy room, then never reads again
    slacker = await RawSocket.open(limited_url, slacker_name := _name("slacker"))
    raws.append(slacker)
    assert (await slacker.call("join", {"room": room}))["ok"] is True
    await until(lambda: slacker_name in (ann.users(room) or []), "the slacker's presence")
    cut_before = _metric(limited_url, "chat_gateway_slow_consumers_total")

    # WHEN the room carries far more than the slacker's buffers and queue cap hold
    text = "\U0001f600" * 4000  # 16 KB of UTF-8 per message
    started = time.monotonic()
    ids = await _send_all(senders, room, 20, text)
    total = len(ids)

    # THEN every other member, on either node, gets every message, in seq order
    for reader in (ann, bob, *senders):
        await until(lambda r=reader: len(r.seqs(room)) >= total, f"{reader.user}'s messages")
        assert reader.seqs(room) == list(range(1, total + 1)), reader.user
    took = time.monotonic() - started
    # AND the slacker was cut off as a slow consumer, its presence withdrawn
    assert _metric(limited_url, "chat_gateway_slow_consumers_total") >= cut_before + 1
    await until(
        lambda: slacker_name not in (ann.users(room) or [slacker_name]), "slacker's removal"
    )
    # AND its node still serves: bob sends and everyone gets it
    ack = await bob.call("send", {"room": room, "text": "still here", "client_msg_id": "after"})
    assert ack["ok"] is True, ack
    await until(lambda: len(ann.seqs(room)) == total + 1, "the message after the cut")
    assert took < 30, f"delivery took {took:.1f}s"


async def test_binary_attachments_are_refused_and_never_kept(
    full_stack: Stack, limited_url: str, clients: list[Client], raws: list[RawSocket]
) -> None:
    room = unique_room("bin")
    ann = await _joined(clients, full_stack.endpoints()["ws_urls"][0], "ann", room)
    bob = await _joined(clients, limited_url, "bob", room)
    mallory = await RawSocket.open(limited_url, _name("mallory"))
    raws.append(mallory)
    assert (await mallory.call("join", {"room": room}))["ok"] is True
    refused_before = _metric(limited_url, "chat_gateway_binary_refused_total")

    async def abuse() -> None:
        # One event declaring a million attachments, then a stream of attachment frames.
        for ack_id in range(100, 103):
            await mallory.send_raw(f'451000000-{ack_id}["send",{{"_placeholder":true,"num":0}}]')
            for _ in range(50):
                await mallory.send_raw(b"\x00" * 32 * 1024)
            ack = await mallory.ack(ack_id)
            assert ack["ok"] is False and ack["error"]["code"] == "binary_not_supported", ack
        # A binary ack and stray binary frames: dropped, no answer, the socket still works.
        await mallory.send_raw('461-7[{"_placeholder":true,"num":0}]')
        await mallory.send_raw(b"stray")
        assert (await mallory.call("typing", {"room": room, "typing": True}))["ok"] is True

    ids, _ = await asyncio.gather(_send_all([ann, bob], room, 20, "hello"), abuse())
    for reader in (ann, bob):
        await until(lambda r=reader: len(r.seqs(room)) >= len(ids), f"{reader.user}'s messages")
        assert reader.seqs(room) == list(range(1, len(ids) + 1)), reader.user
    assert _metric(limited_url, "chat_gateway_binary_refused_total") >= refused_before + 150


async def test_replay_is_capped_per_join_and_rejoins_are_rate_limited(
    full_stack: Stack, limited_url: str, clients: list[Client]
) -> None:
    room = unique_room("replay")
    url0 = full_stack.endpoints()["ws_urls"][0]
    ann, cy = [await _joined(clients, url0, user, room) for user in ("ann", "cy")]
    ids = await _send_all([ann, cy], room, 13, "backlog")
    await until(lambda: len(ann.seqs(room)) == 26, "the backlog")

    # A join from the start replays only the newest 10, and says the rest is a gap.
    rejoiner = Client(_name("rejoin"))
    clients.append(rejoiner)
    await rejoiner.connect(limited_url)
    ack = await rejoiner.call("join", {"room": room, "since_seq": 0})
    assert ack["ok"] is True and ack["gap"] is True and ack["last_seq"] == 26, ack
    assert rejoiner.seqs(room) == list(range(17, 27))
    # Within the cap: everything after since_seq, no gap.
    ack = await rejoiner.call("join", {"room": room, "since_seq": 20})
    assert ack["ok"] is True and "gap" not in ack, ack
    assert rejoiner.seqs(room)[10:] == list(range(21, 27))

    # Rejoining over and over is limited (burst 5 here), while others keep sending.
    async def rejoin_loop() -> list[dict[str, object]]:
        return [await rejoiner.call("join", {"room": room, "since_seq": 0}) for _ in range(6)]

    more, acks = await asyncio.gather(_send_all([ann, cy], room, 5, "live"), rejoin_loop())
    refused = [a for a in acks if not a["ok"]]
    assert refused, acks
    error = refused[0]["error"]
    assert isinstance(error, dict) and error["code"] == "rate_limited", refused
    assert int(str(refused[0]["retry_after_ms"])) > 0
    total = len(ids) + len(more)
    await until(lambda: len(ann.seqs(room)) == total, "ann's messages")
    assert ann.seqs(room) == list(range(1, total + 1))


async def _refused(url: str, user: str) -> dict[str, object]:
    c = Client(user)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await c.connect(url)
    finally:
        await c.close()
    assert isinstance(c.refusal, dict), c.refusal
    return c.refusal


async def test_sockets_per_user_are_capped_and_connects_rate_limited(
    limited_url: str, clients: list[Client]
) -> None:
    room = unique_room("caps")
    ann = await _joined(clients, limited_url, "ann", room)
    first = await _joined(clients, limited_url, "hog", room)
    hog = first.user
    mine = [first, *[await _joined_as(clients, limited_url, hog, room) for _ in range(2)]]
    # A fourth socket of the same user on the node is refused; others still connect.
    refusal = await _refused(limited_url, hog)
    assert refusal["code"] == "too_many_sockets" and refusal["message"], refusal
    await _joined(clients, limited_url, "other", room)
    # Closing one makes room for one more.
    await mine[0].close()
    await asyncio.sleep(0.5)  # the node sees the close
    mine[0] = await _joined_as(clients, limited_url, hog, room)

    # Connects of one user are rate-limited (burst 6 here): open and close in a loop.
    flapper = _name("flap")
    codes: list[object] = []
    for _ in range(8):
        c = Client(flapper)
        try:
            await c.connect(limited_url)
            codes.append("ok")
        except socketio.exceptions.ConnectionError:
            assert isinstance(c.refusal, dict), c.refusal
            codes.append(c.refusal["code"])
            assert int(str(c.refusal["retry_after_ms"])) > 0, c.refusal
        finally:
            await c.close()
    assert codes[:6] == ["ok"] * 6 and codes[6:] == ["rate_limited"] * 2, codes

    # Meanwhile every message of the room still reaches everyone.
    ids = await _send_all([ann, mine[1]], room, 5, "fine")
    for reader in (ann, *mine):
        await until(lambda r=reader: len(r.seqs(room)) >= len(ids), f"{reader.user}'s messages")


async def test_leave_is_rate_limited(limited_url: str, clients: list[Client]) -> None:
    room = unique_room("leave")
    ann = await _joined(clients, limited_url, "ann", room)
    churner = await _joined(clients, limited_url, "churn", room)
    acks = []
    for _ in range(7):
        acks.append(await churner.call("leave", {"room": room}))
    codes = [a["ok"] or a["error"]["code"] for a in acks]
    assert codes[:5] == [True] * 5 and set(codes[5:]) == {"rate_limited"}, codes
    ids = await _send_all([ann], room, 5, "still")
    await until(lambda: len(ann.seqs(room)) == len(ids), "ann's messages")


async def test_a_session_that_never_connects_socketio_is_closed(
    limited_url: str, clients: list[Client]
) -> None:
    room = unique_room("idle")
    ann = await _joined(clients, limited_url, "ann", room)
    port = limited_url.rsplit(":", 1)[1]
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url, ping_interval=None) as idle:
        assert str(await idle.recv()).startswith("0")
        started = time.monotonic()
        # The server pings every 20 s: the only way it ends within a few is the connect timeout.
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(8):
                while True:
                    await idle.recv()
        assert time.monotonic() - started < 6
    assert (await ann.call("typing", {"room": room, "typing": True}))["ok"] is True


async def test_presence_is_coalesced_per_room_and_joiners_get_the_full_list(
    limited_url: str, clients: list[Client]
) -> None:
    room = unique_room("churn")
    ann = await _joined(clients, limited_url, "ann", room)
    bob = await _joined(clients, limited_url, "bob", room)
    churners = []
    for i in range(10):
        c = Client(_name(f"churn{i}"))
        clients.append(c)
        await c.connect(limited_url)
        churners.append(c)
    await asyncio.sleep(1.0)  # past the quiet interval of the two joins above
    before = len(ann.got("presence", room))

    async def churn(c: Client) -> None:
        for _ in range(2):
            assert (await c.call("join", {"room": room}))["ok"] is True
            assert (await c.call("leave", {"room": room}))["ok"] is True

    # WHEN 10 users join and leave twice each (40 changes) while ann and bob talk
    started = time.monotonic()
    ids, *_ = await asyncio.gather(
        _send_all([ann, bob], room, 10, "talk"), *(churn(c) for c in churners)
    )
    churned = time.monotonic() - started
    # THEN the room ends up announced as it is, in far fewer events than changes
    settled = sorted([ann.user, bob.user])
    await until(lambda: sorted(ann.users(room) or []) == settled, "the settled presence")
    await asyncio.sleep(1.0)  # any trailing announcement
    events = len(ann.got("presence", room)) - before
    assert 1 <= events <= churned / 0.5 + 3 and events < 20, (events, churned)
    assert sorted(ann.users(room) or []) == settled
    # AND a joiner right after a change still gets the full list at once
    late = churners[0]
    seen = len(late.got("presence", room))
    assert (await late.call("join", {"room": room}))["ok"] is True
    await until(lambda: len(late.got("presence", room)) > seen, "the joiner's presence")
    assert sorted(late.got("presence", room)[seen]["users"]) == sorted([*settled, late.user])
    for reader in (ann, bob):
        await until(lambda r=reader: len(r.seqs(room)) == len(ids), f"{reader.user}'s messages")
