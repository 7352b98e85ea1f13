"""Replies, edits, deletes, reactions and read positions across two gateway nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from realtime_client import Client

from devstack import Stack
from tests.support import unique_room, until


@pytest.fixture
def room() -> str:
    return unique_room("ev")


@pytest.fixture
async def trio(full_stack: Stack) -> AsyncIterator[tuple[Client, Client, Client]]:
    """Ann on node 1, Bob on node 2, and a second socket of Ann on node 2."""
    urls = full_stack.endpoints()["ws_urls"]
    ann, bob, ann2 = Client("ann"), Client("bob"), Client("ann")
    await ann.connect(urls[0])
    await bob.connect(urls[1])
    await ann2.connect(urls[1])
    yield ann, bob, ann2
    for m in (ann, bob, ann2):
        await m.close()


def _http(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.endpoints()["http_url"], headers={"X-User": user}, timeout=10
    )


async def _ok(m: Client, event: str, payload: dict[str, Any]) -> dict[str, Any]:
    ack: dict[str, Any] = await m.call(event, payload)
    assert ack["ok"] is True, (event, payload, ack)
    return ack


async def test_every_event_kind_reaches_every_member_once_in_seq_order_and_replays(
    full_stack: Stack, trio: tuple[Client, Client, Client], room: str
) -> None:
    ann, bob, ann2 = trio
    for m in (ann, bob, ann2):
        await _ok(m, "join", {"room": room})
    # GIVEN a message, a reply, an edit, reactions, a delete and retries of each op
    first = await _ok(ann, "send", {"room": room, "text": "hello", "client_msg_id": "m1"})
    m1 = first["id"]
    reply = {"room": room, "text": "hi ann", "client_msg_id": "m2", "reply_to": m1}
    m2 = (await _ok(bob, "send", reply))["id"]
    assert await bob.call("send", reply) == {"ok": True, "id": m2}
    edit = {"room": room, "id": m1, "text": "hello all", "client_op_id": "e1"}
    assert await ann.call("edit", edit) == {"ok": True, "id": m1, "version": 2}
    assert await ann.call("edit", edit) == {"ok": True, "id": m1, "version": 2}
    react = {"room": room, "id": m1, "emoji": "👍", "on": True, "client_op_id": "r1"}
    assert await bob.call("react", react) == {"ok": True}
    assert await bob.call("react", react) == {"ok": True}
    await _ok(ann, "react", {**react, "client_op_id": "r2"})
    await _ok(bob, "react", {**react, "on": False, "client_op_id": "r3"})
    delete = {"room": room, "id": m2, "client_op_id": "d1"}
    assert await bob.call("delete", delete) == {"ok": True, "id": m2}
    assert await bob.call("delete", delete) == {"ok": True, "id": m2}

    # THEN every member, on either node, got seqs 1..7 once, in order, each of its kind
    kinds = [
        "message",
        "message",
        "message_updated",
        "reaction",
        "reaction",
        "reaction",
        "message_deleted",
    ]
    for m in (ann, bob, ann2):
        await until(lambda m=m: len(m.room_events(room)) >= 7, f"7 events at {m.user}")
    await asyncio.sleep(0.3)  # anything extra would show up now
    live = ann.room_events(room)
    assert [e for e, _ in live] == kinds
    assert [d["seq"] for _, d in live] == list(range(1, 8))
    assert bob.room_events(room) == live and ann2.room_events(room) == live
    assert live[1][1]["reply_to"] == m1 and live[0][1]["reply_to"] is None
    assert live[2][1]["msg_seq"] == 1 and live[2][1]["version"] == 2
    assert [(d["user"], d["on"]) for _, d in live[3:6]] == [
        ("bob", True),
        ("ann", True),
        ("bob", False),
    ]

    # AND a socket that reconnects with since_seq gets the same events replayed
    late = Client("cy")
    await late.connect(full_stack.endpoints()["ws_urls"][0])
    try:
        ack = await _ok(late, "join", {"room": room, "since_seq": 1})
        assert ack["last_seq"] == 7 and "gap" not in ack
        assert late.room_events(room) == live[1:]
    finally:
        await late.close()

    # AND once persisted, history shows the current state and the event log the same events
    async with _http(full_stack, "ann") as http:

        async def page() -> list[dict[str, Any]]:
            body = (await http.get(f"/rooms/{room}/messages")).json()
            messages: list[dict[str, Any]] = body["messages"]
            return messages

        want = [
            (1, "hello all", 2, False, {"👍": 1}, 0),
            (2, "", 1, True, {}, 0),
        ]
        state: list[Any] = []

        async def persisted() -> bool:
            state[:] = [
                (m["seq"], m["text"], m["version"], m["deleted"], m["reactions"], m["reply_count"])
                for m in await page()
            ]
            return state == want

        deadline = time.monotonic() + 20
        while not await persisted():
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.1)
        log = (await http.get(f"/rooms/{room}/events", params={"after_seq": 0})).json()
        # The live events carry their type too; the log's messages show their current state.
        assert [e["type"] for e in log["events"]] == kinds
        assert log["events"][2:] == [d for _, d in live[2:]]


async def test_two_concurrent_edits_of_one_message_end_with_one_winner_everywhere(
    full_stack: Stack, trio: tuple[Client, Client, Client], room: str
) -> None:
    ann, bob, ann2 = trio
    for m in (ann, bob, ann2):
        await _ok(m, "join", {"room": room})
    m1 = (await _ok(ann, "send", {"room": room, "text": "draft", "client_msg_id": "m"}))["id"]
    # WHEN both of ann's sockets (one per node) edit the message at once
    acks = await asyncio.gather(
        ann.call("edit", {"room": room, "id": m1, "text": "from one", "client_op_id": "a"}),
        ann2.call("edit", {"room": room, "id": m1, "text": "from two", "client_op_id": "b"}),
    )
    acked_at = time.monotonic()
    # THEN each got its own version, and the one with the later seq wins
    assert sorted(a["version"] for a in acks) == [2, 3]
    winner = "from one" if acks[0]["version"] == 3 else "from two"
    for m in (ann, bob, ann2):
        await until(lambda m=m: len(m.got("message_updated", room)) >= 2, f"edits at {m.user}")
    updates = bob.got("message_updated", room)
    assert [u["version"] for u in updates] == [2, 3] and updates[-1]["text"] == winner
    assert ann.got("message_updated", room) == updates == ann2.got("message_updated", room)
    late = Client("cy")
    await late.connect(full_stack.endpoints()["ws_urls"][1])
    try:
        await _ok(late, "join", {"room": room, "since_seq": 0})
        assert late.got("message_updated", room) == updates
    finally:
        await late.close()

    # AND history holds the winner once persisted; measured: ack to row in PostgreSQL
    dsn = full_stack.endpoints()["postgres_dsn"]

    def stored() -> tuple[str, int] | None:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT text, version FROM messages WHERE id = %s", (m1,)).fetchone()
            return None if row is None else (row[0], row[1])

    await until(lambda: stored() == (winner, 3), "the winning edit in PostgreSQL")
    lag = time.monotonic() - acked_at
    print(f"edit persistence lag, ack to row in PostgreSQL (upper bound): {lag * 1000:.0f} ms")
    async with _http(full_stack, "bob") as http:
        page = (await http.get(f"/rooms/{room}/messages")).json()["messages"]
        assert [(m["text"], m["version"]) for m in page] == [(winner, 3)]


async def test_read_positions_move_forward_are_announced_and_count_unread(
    full_stack: Stack, trio: tuple[Client, Client, Client], room: str
) -> None:
    ann, bob, _ = trio
    await _ok(ann, "join", {"room": room})
    ids = [
        (await _ok(ann, "send", {"room": room, "text": f"n{i}", "client_msg_id": f"{i}"}))["id"]
        for i in range(4)
    ]
    await _ok(ann, "delete", {"room": room, "id": ids[3], "client_op_id": "d"})
    # GIVEN bob joins a room with 4 messages (one deleted) he never read
    joined = await _ok(bob, "join", {"room": room})
    assert (joined["last_seq"], joined["last_read_seq"], joined["unread"]) == (5, 0, 3)
    await _ok(bob, "send", {"room": room, "text": "mine", "client_msg_id": "b"})
    await until(lambda: 6 in bob.seqs(room), "bob's own message sequenced")
    # WHEN he reads up to seq 2, then back to 1, then past the end
    assert await bob.call("read", {"room": room, "seq": 2}) == {"ok": True, "last_read_seq": 2}
    assert await bob.call("read", {"room": room, "seq": 1}) == {"ok": True, "last_read_seq": 2}
    assert await bob.call("read", {"room": room, "seq": 10**12}) == {
        "ok": True,
        "last_read_seq": 6,
    }
    # THEN ann hears of it (coalesced, so at most the first move and the last one)
    await until(
        lambda: any(r["last_read_seq"] == 6 for r in ann.got("read", room)), "bob's read at ann"
    )
    reads = ann.got("read", room)
    assert reads[0] == {"room": room, "user": "bob", "last_read_seq": 2} and len(reads) <= 2
    assert not bob.got("read", room)
    # AND a later join, on the other node, knows the position and counts only newer messages
    await _ok(ann, "send", {"room": room, "text": "new", "client_msg_id": "9"})
    await until(lambda: 7 in ann.seqs(room), "ann's new message sequenced")
    again = Client("bob")
    await again.connect(full_stack.endpoints()["ws_urls"][0])
    try:
        ack = await _ok(again, "join", {"room": room})
        assert (ack["last_seq"], ack["last_read_seq"], ack["unread"]) == (7, 6, 1)
    finally:
        await again.close()
    # AND GET /me/rooms gives the same once persisted
    async with _http(full_stack, "bob") as http:
        mine: list[Any] = []

        async def listed() -> bool:
            rooms = (await http.get("/me/rooms")).json()["rooms"]
            mine[:] = [r for r in rooms if r["room"] == room]
            return mine == [{"room": room, "last_seq": 7, "last_read_seq": 6, "unread": 1}]

        deadline = time.monotonic() + 20
        while not await listed():
            assert time.monotonic() < deadline, mine
            await asyncio.sleep(0.1)


BAD_OPS: list[tuple[str, dict[str, Any], str]] = [
    ("edit", {"room": "{room}", "id": "{ann}", "text": "", "client_op_id": "x"}, "invalid_text"),
    (
        "edit",
        {"room": "{room}", "id": "{ann}", "text": "x" * 4001, "client_op_id": "x"},
        "text_too_long",
    ),
    (
        "edit",
        {"room": "{room}", "id": "{ann}", "text": "hi", "client_op_id": ""},
        "invalid_client_op_id",
    ),
    ("edit", {"room": "{room}", "id": "{ann}", "text": "hi"}, "invalid_payload"),
    (
        "edit",
        {"room": "{room}", "id": "{ann}", "text": "mine now", "client_op_id": "x"},
        "forbidden",
    ),
    ("delete", {"room": "{room}", "id": "{ann}", "client_op_id": "x2"}, "forbidden"),
    ("edit", {"room": "{room}", "id": "{bob}", "text": "hi", "client_op_id": "x3"}, "not_found"),
    (
        "edit",
        {"room": "{room}", "id": "no-such-id", "text": "hi", "client_op_id": "x"},
        "not_found",
    ),
    ("delete", {"room": "{room}", "id": 7, "client_op_id": "x"}, "invalid_payload"),
    (
        "react",
        {"room": "{room}", "id": "{ann}", "emoji": "😀" * 33, "on": True, "client_op_id": "x"},
        "invalid_emoji",
    ),
    (
        "react",
        {"room": "{room}", "id": "{ann}", "emoji": "a b", "on": True, "client_op_id": "x"},
        "invalid_emoji",
    ),
    (
        "react",
        {"room": "{room}", "id": "{ann}", "emoji": "", "on": True, "client_op_id": "x"},
        "invalid_emoji",
    ),
    (
        "react",
        {"room": "{room}", "id": "{ann}", "emoji": "👍", "on": "yes", "client_op_id": "x"},
        "invalid_payload",
    ),
    (
        "react",
        {"room": "{room}", "id": "{bob}", "emoji": "👍", "on": True, "client_op_id": "x4"},
        "not_found",
    ),
    (
        "react",
        {"room": "other-room", "id": "{ann}", "emoji": "👍", "on": True, "client_op_id": "x"},
        "not_member",
    ),
    (
        "edit",
        {"room": "other-room", "id": "{ann}", "text": "hi", "client_op_id": "x"},
        "not_member",
    ),
    ("read", {"room": "other-room", "seq": 1}, "not_member"),
    ("read", {"room": "{room}", "seq": -1}, "invalid_payload"),
    ("read", {"room": "{room}", "seq": 2**64}, "invalid_payload"),
    (
        "send",
        {"room": "{room}", "text": "re", "client_msg_id": "r", "reply_to": "{bob}"},
        "not_found",
    ),
    (
        "send",
        {"room": "{room}", "text": "re", "client_msg_id": "r2", "reply_to": 5},
        "invalid_payload",
    ),
]


async def test_bad_ops_get_their_error_and_change_nothing(
    trio: tuple[Client, Client, Client], room: str
) -> None:
    ann, bob, _ = trio
    for m in (ann, bob):
        await _ok(m, "join", {"room": room})
    ann_id = (await _ok(ann, "send", {"room": room, "text": "ann's", "client_msg_id": "a"}))["id"]
    bob_id = (await _ok(bob, "send", {"room": room, "text": "bob's", "client_msg_id": "b"}))["id"]
    await _ok(bob, "delete", {"room": room, "id": bob_id, "client_op_id": "gone"})
    await until(lambda: len(ann.room_events(room)) >= 3, "the setup at ann")
    for event, payload, code in BAD_OPS:
        filled = {
            k: (v.format(room=room, ann=ann_id, bob=bob_id) if isinstance(v, str) else v)
            for k, v in payload.items()
        }
        ack = await bob.call(event, filled)
        assert ack["ok"] is False, (event, filled, ack)
        assert ack["error"]["code"] == code, (event, filled, ack)
        assert ack["error"]["message"]
    # A refused op retried answers the same, and nothing was sequenced for any of them.
    retry = {"room": room, "id": ann_id, "text": "mine now", "client_op_id": "x"}
    assert (await bob.call("edit", retry))["error"]["code"] == "forbidden"
    ok = await _ok(ann, "edit", {"room": room, "id": ann_id, "text": "still", "client_op_id": "e"})
    assert ok["version"] == 2
    await until(lambda: len(bob.room_events(room)) >= 4, "the good edit at bob")
    await asyncio.sleep(0.3)
    assert [d["seq"] for _, d in bob.room_events(room)] == [1, 2, 3, 4]
    assert ann.room_events(room) == bob.room_events(room)
