"""The whole message path: two gateway nodes, the message and persist functions, history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import socketio
from realtime_client import Client

from devstack import Stack
from tests.support import unique_room, until


@pytest.fixture
def room() -> str:
    return unique_room("e2e")


@pytest.fixture
async def pair(full_stack: Stack) -> AsyncIterator[tuple[Client, Client]]:
    """Ann on gateway node 1 and Bob on gateway node 2."""
    urls = full_stack.endpoints()["ws_urls"]
    assert len(urls) >= 2, "the e2e suite needs two gateway nodes"
    ann, bob = Client("ann"), Client("bob")
    await ann.connect(urls[0])
    await bob.connect(urls[1])
    yield ann, bob
    for m in (ann, bob):
        await m.close()


async def test_members_on_two_nodes_receive_every_message_once_in_seq_order(
    full_stack: Stack, pair: tuple[Client, Client], room: str
) -> None:
    ann, bob = pair
    # GIVEN both members in one room, each on its own node
    for m in (ann, bob):
        ack = await m.call("join", {"room": room})
        assert ack == {"ok": True, "room": room, "last_seq": 0, "last_read_seq": 0, "unread": 0}

    # WHEN both send at once
    async def send_all(m: Client, n: int) -> list[str]:
        ids = []
        for i in range(n):
            payload = {"room": room, "text": f"{m.user} says {i}", "client_msg_id": f"{i}"}
            ack = await m.call("send", payload)
            assert ack["ok"] is True, ack
            ids.append(ack["id"])
        return ids

    ann_ids, bob_ids = await asyncio.gather(send_all(ann, 15), send_all(bob, 15))
    sent = set(ann_ids) | set(bob_ids)
    assert len(sent) == 30

    # THEN each member gets all 30, exactly once, seq 1..30 in order, the sender included
    for m in (ann, bob):
        await until(lambda m=m: len(m.seqs(room)) >= 30, f"30 messages at {m.user}")
        await asyncio.sleep(0.3)  # anything extra would show up now
        assert m.seqs(room) == list(range(1, 31))
        assert {x["id"] for x in m.got("message")} == sent
    ann_texts = [x["text"] for x in ann.got("message") if x["sender"] == "ann"]
    assert ann_texts == [f"ann says {i}" for i in range(15)]  # one sender's order is kept
    assert ann.got("message") == bob.got("message")
    first = ann.got("message")[0]
    assert set(first) == {"id", "room", "seq", "sender", "text", "client_msg_id", "ts", "reply_to"}
    assert first["ts"].endswith("Z")

    # AND the history function returns them all, in order, once persisted
    http = full_stack.endpoints()["http_url"]
    async with httpx.AsyncClient(base_url=http, headers={"X-User": "ann"}, timeout=10) as client:
        page = (await client.get(f"/rooms/{room}/messages", params={"limit": 200})).json()
        assert [x["seq"] for x in page["messages"]] == list(range(1, 31))
        # History items are the messages plus their current state (never edited here).
        assert [{k: m[k] for k in first} for m in page["messages"]] == ann.got("message")
        assert {(m["version"], m["deleted"], m["reply_count"]) for m in page["messages"]} == {
            (1, False, 0)
        }
        older = (await client.get(f"/rooms/{room}/messages", params={"limit": 10})).json()
        assert [x["seq"] for x in older["messages"]] == list(range(21, 31))
        assert older["next_before_seq"] == 21
        before = {"limit": 10, "before_seq": 21}
        prev = (await client.get(f"/rooms/{room}/messages", params=before)).json()
        assert [x["seq"] for x in prev["messages"]] == list(range(11, 21))
        after = (await client.get(f"/rooms/{room}/messages", params={"after_seq": 25})).json()
        assert [x["seq"] for x in after["messages"]] == list(range(26, 31))

    dsn = full_stack.endpoints()["postgres_dsn"]

    def stored() -> list[int]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT seq FROM messages WHERE room = %s ORDER BY seq", (room,))
            return [r[0] for r in rows]

    await until(lambda: stored() == list(range(1, 31)), "30 rows in PostgreSQL")


async def test_a_resent_message_keeps_its_id_and_makes_no_second_message(
    full_stack: Stack, pair: tuple[Client, Client], room: str
) -> None:
    ann, bob = pair
    for m in (ann, bob):
        await m.call("join", {"room": room})
    payload = {"room": room, "text": "only once", "client_msg_id": "retry-me"}
    first = await ann.call("send", payload)
    again = await ann.call("send", payload)
    assert first["ok"] and again == first
    await until(lambda: len(bob.seqs(room)) >= 1, "the message at bob")
    follow = await ann.call("send", {"room": room, "text": "next", "client_msg_id": "n"})
    await until(lambda: len(bob.seqs(room)) >= 2, "the next message at bob")
    assert bob.seqs(room) == [1, 2]
    assert bob.got("message")[1]["id"] == follow["id"]
    # Another user's identical client_msg_id is another message.
    await bob.call("send", payload)
    await until(lambda: len(ann.seqs(room)) >= 3, "bob's message at ann")
    assert ann.got("message")[2]["sender"] == "bob" and ann.got("message")[2]["id"] != first["id"]


BAD_INPUT: list[tuple[str, Any, str]] = [
    ("join", {"room": "no spaces allowed"}, "invalid_room"),
    ("join", "not an object", "invalid_payload"),
    ("join", {"room": "r", "since_seq": -3}, "invalid_payload"),
    ("send", {"room": "{room}", "text": "", "client_msg_id": "a"}, "invalid_text"),
    ("send", {"room": "{room}", "text": "x" * 4001, "client_msg_id": "a"}, "text_too_long"),
    ("send", {"room": "{room}", "text": "hi", "client_msg_id": ""}, "invalid_client_msg_id"),
    ("send", {"room": "{room}", "text": "hi", "client_msg_id": "a" * 65}, "invalid_client_msg_id"),
    ("send", {"room": "{room}", "text": ["hi"], "client_msg_id": "a"}, "invalid_payload"),
    ("send", {"room": "never-joined", "text": "hi", "client_msg_id": "a"}, "not_member"),
    ("send", None, "invalid_payload"),
    ("typing", {"room": "{room}", "typing": "yes"}, "invalid_payload"),
    ("leave", {}, "invalid_payload"),
    ("no-such-event", {"x": 1}, "invalid_payload"),
]


async def test_bad_input_gets_an_error_ack_and_the_node_keeps_serving(
    pair: tuple[Client, Client], room: str
) -> None:
    ann, bob = pair
    for m in (ann, bob):
        await m.call("join", {"room": room})
    for event, payload, code in BAD_INPUT:
        if isinstance(payload, dict):
            payload = {
                k: (v.replace("{room}", room) if isinstance(v, str) else v)
                for k, v in payload.items()
            }
        ack = await ann.call(event, payload)
        assert ack["ok"] is False, (event, payload, ack)
        assert ack["error"]["code"] == code, (event, payload, ack)
        assert ack["error"]["message"]
    # An event with no payload at all is bad input too, not a crash.
    assert (await ann.call("send"))["error"]["code"] == "invalid_payload"
    # The same socket and the other node still work, and nothing bad was sequenced.
    ok = await ann.call("send", {"room": room, "text": "still here", "client_msg_id": "ok"})
    assert ok["ok"] is True
    await until(lambda: len(bob.seqs(room)) >= 1, "the good message at bob")
    await asyncio.sleep(0.3)
    assert [m["text"] for m in bob.got("message")] == ["still here"]


async def test_an_oversized_frame_is_refused_without_hurting_others(
    full_stack: Stack, pair: tuple[Client, Client], room: str
) -> None:
    _, bob = pair
    await bob.call("join", {"room": room})
    big = Client("mallory")
    await big.connect(full_stack.endpoints()["ws_urls"][1])
    await big.call("join", {"room": room})
    # Over the node's max payload: the engine closes this connection, and no one else's.
    await big.sio.emit("send", {"room": room, "text": "x" * 200_000, "client_msg_id": "big"})
    await until(lambda: not big.sio.connected, "the oversized sender to be cut off", 10)
    await big.close()
    await bob.call("send", {"room": room, "text": "fine", "client_msg_id": "f"})
    await until(lambda: len(bob.seqs(room)) >= 1, "bob's own message")


async def test_a_socket_without_credentials_is_refused_with_a_code(full_stack: Stack) -> None:
    m = Client("nobody")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await m.connect(full_stack.endpoints()["ws_urls"][0], auth={})
    assert isinstance(m.refusal, dict)
    assert m.refusal["code"] == "unauthorized" and m.refusal["message"]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("limit=0", 400, "invalid_parameter"),
        ("limit=201", 400, "invalid_parameter"),
        ("limit=abc", 400, "invalid_parameter"),
        ("before_seq=-1", 400, "invalid_parameter"),
        ("before_seq=1&after_seq=1", 400, "invalid_parameter"),
    ],
)
async def test_history_answers_bad_parameters_with_json_errors(
    full_stack: Stack, room: str, query: str, status: int, code: str
) -> None:
    http = full_stack.endpoints()["http_url"]
    async with httpx.AsyncClient(base_url=http, timeout=10) as client:
        r = await client.get(f"/rooms/{room}/messages?{query}", headers={"X-User": "ann"})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)
        bad_room = await client.get("/rooms/bad%20room/messages", headers={"X-User": "ann"})
        assert bad_room.status_code == 400 and bad_room.json()["error"]["code"] == "invalid_room"
        anonymous = await client.get(f"/rooms/{room}/messages")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"


async def test_a_longest_message_of_wide_characters_is_accepted_intact(
    pair: tuple[Client, Client], room: str
) -> None:
    ann, bob = pair
    for m in (ann, bob):
        await m.call("join", {"room": room})
    # 4,000 emoji: 16 KB of UTF-8, 48 KB once a client escapes it as JSON.
    text = "😀" * 4000
    ack = await ann.call("send", {"room": room, "text": text, "client_msg_id": "wide"})
    assert ack["ok"] is True, ack
    await until(lambda: len(bob.seqs(room)) >= 1, "the long message at bob")
    assert bob.got("message")[0]["text"] == text
