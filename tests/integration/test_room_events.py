"""Edits, deletes, reactions and replies through the message function, persist and history."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chat import frames, inbound, names
from chat.contract import (
    DeleteRequest,
    EditRequest,
    ReactRequest,
    SendRequest,
)
from chat.ids import message_id, op_id
from functions import message, persist
from functions.batch import StreamRecord
from functions.deps import Deps
from tests.integration.persistence_support import (
    MakeDeps,
    fetch,
    get_json,
    http_app,
    records,
)
from tests.support import unique_room

TS = "2026-11-28T10:00:00.000Z"


@pytest.fixture
def deps(make_deps: MakeDeps) -> Deps:
    return make_deps(max_emojis_per_message=2)


class Room:
    """A room's entries, fed to the message function one batch at a time."""

    def __init__(self) -> None:
        self.name = unique_room("ev")
        self._n = 0

    def _record(self, fields: dict[str, str]) -> StreamRecord:
        self._n += 1
        return StreamRecord(id=f"{self._n}-1", fields=fields)

    def send(self, user: str, cid: str, text: str, reply_to: str | None = None) -> StreamRecord:
        request = SendRequest(room=self.name, text=text, client_msg_id=cid, reply_to=reply_to)
        return self._record(inbound.send_entry(request, user, TS))

    def edit(self, user: str, target: str, text: str, op: str) -> StreamRecord:
        request = EditRequest(room=self.name, id=target, text=text, client_op_id=op)
        return self._record(inbound.op_entry(request, user, TS))

    def delete(self, user: str, target: str, op: str) -> StreamRecord:
        return self._record(inbound.op_entry(DeleteRequest(self.name, target, op), user, TS))

    def react(self, user: str, target: str, emoji: str, on: bool, op: str) -> StreamRecord:
        request = ReactRequest(room=self.name, id=target, emoji=emoji, on=on, client_op_id=op)
        return self._record(inbound.op_entry(request, user, TS))


async def _outcomes(pubsub: Any, want: int) -> dict[str, tuple[str, int]]:
    seen: dict[str, tuple[str, int]] = {}
    count = 0
    while count < want:
        item = await asyncio.wait_for(pubsub.get_message(timeout=5), timeout=6)
        if item and item["type"] == "smessage":
            frame = frames.decode_frame(item["data"])
            if frame.event == frames.OP_EVENT:
                outcome = frames.decode_op(frame.packet)
                seen[outcome.op] = (outcome.code, outcome.version)
                count += 1
    return seen


async def _log(deps: Deps, room: str) -> list[tuple[int, str, dict[str, Any]]]:
    entries = await deps.redis.xrange(names.recent_log_key(room))
    return [
        (frames.log_entry_seq(i), frames.log_entry_event(f), json.loads(frames.log_entry_json(f)))
        for i, f in entries
    ]


async def test_ops_follow_the_rules_share_the_seq_and_persist_to_the_current_state(
    deps: Deps,
) -> None:
    room = Room()
    r = room.name
    m1, m2 = message_id("ann", r, "a"), message_id("bob", r, "b")
    channel = names.room_channel(r)
    pubsub = deps.shards.node(await deps.shards.owner(channel)).pubsub()
    await pubsub.ssubscribe(channel)
    # GIVEN one batch with every kind of op, legal and not
    batch = [
        room.send("ann", "a", "hello"),
        room.send("bob", "b", "re: hello", reply_to=m1),
        room.send("bob", "c", "re: nothing", reply_to=message_id("x", r, "x")),
        room.edit("bob", m1, "bob was here", "e0"),  # forbidden: not bob's
        room.edit("ann", m1, "hello, edited", "e1"),
        room.react("ann", m2, "👍", True, "r1"),
        room.react("bob", m2, "👍", True, "r2"),
        room.react("ann", m2, "👍", True, "r3"),  # changes nothing: ann counts once
        room.react("ann", m2, "🎉", True, "r4"),
        room.react("ann", m2, "🙂", True, "r5"),  # a third distinct emoji: over the cap of 2
        room.delete("ann", m2, "d0"),  # forbidden: bob's
        room.edit("ann", m1, "hello, twice", "e2"),
        room.delete("bob", m2, "d1"),
        room.react("ann", m2, "👍", False, "r6"),  # the message is deleted
        room.edit("ann", message_id("ann", "elsewhere", "a"), "x", "e3"),  # not in this room
    ]
    result = await message.handle(batch, deps)
    assert result.clean and result.settle is not None
    await asyncio.wait_for(result.settle, timeout=30)

    # THEN the legal ones took seqs 1..8 in order, the others none
    log = await _log(deps, r)
    assert [(seq, event) for seq, event, _ in log] == [
        (1, "message"),
        (2, "message"),
        (3, "message_updated"),
        (4, "reaction"),
        (5, "reaction"),
        (6, "reaction"),
        (7, "message_updated"),
        (8, "message_deleted"),
    ]
    assert log[1][2]["reply_to"] == m1 and log[0][2]["reply_to"] is None
    assert log[6][2] == {
        "type": "message_updated",
        "id": m1,
        "room": r,
        "seq": 7,
        "msg_seq": 1,
        "version": 3,
        "text": "hello, twice",
        "edited_at": TS,
        "sender": "ann",
    }
    assert log[7][2] == {
        "type": "message_deleted",
        "id": m2,
        "room": r,
        "seq": 8,
        "msg_seq": 2,
        "deleted_at": TS,
    }
    # AND every waited-for op got its outcome on the room's channel
    ops = await _outcomes(pubsub, want=14)
    expect = {
        m2: ("ok", 0),
        message_id("bob", r, "c"): ("not_found", 0),
        op_id("bob", r, "e0"): ("forbidden", 0),
        op_id("ann", r, "e1"): ("ok", 2),
        op_id("ann", r, "r3"): ("ok", 0),
        op_id("ann", r, "r5"): ("too_many_emojis", 0),
        op_id("ann", r, "d0"): ("forbidden", 0),
        op_id("ann", r, "e2"): ("ok", 3),
        op_id("ann", r, "r6"): ("not_found", 0),
        op_id("ann", r, "e3"): ("not_found", 0),
    }
    assert {k: ops[k] for k in expect} == expect

    # WHEN the batch is delivered again (a retry of every op, or a redelivery)
    again = await message.handle(batch, deps)
    assert again.clean and again.settle is not None
    await asyncio.wait_for(again.settle, timeout=30)
    # THEN nothing new is sequenced and every op answers as the first time
    assert await deps.redis.get(names.seq_key(r)) == "8"
    assert {k: v for k, v in (await _outcomes(pubsub, want=14)).items() if k in expect} == expect
    await pubsub.aclose()

    # WHEN persist stores the log's events (twice: a redelivered batch)
    values = [
        frames.log_entry_json(f).encode()
        for _, f in await deps.redis.xrange(names.recent_log_key(r))
    ]
    values.append(
        json.dumps({"type": "read", "room": r, "user": "bob", "last_read_seq": 5}).encode()
    )
    for _ in range(2):
        stored = await persist.handle(records(values), deps)
        assert stored.clean, stored
    # THEN PostgreSQL holds the current state, every superseded text and the events
    rows = await fetch(
        deps,
        "SELECT seq, text, version, deleted, reply_to::text FROM messages WHERE room = %s"
        " ORDER BY seq",
        r,
    )
    assert rows == [(1, "hello, twice", 3, False, None), (2, "", 1, True, m1)]
    versions = await fetch(
        deps,
        "SELECT message_id::text, version, text FROM message_versions"
        " WHERE message_id IN (%s, %s) ORDER BY 1, 2",
        m1,
        m2,
    )
    assert sorted(versions) == sorted(
        [(m1, 1, "hello"), (m1, 2, "hello, edited"), (m2, 1, "re: hello")]
    )
    events = await fetch(deps, "SELECT seq, type FROM room_events WHERE room = %s ORDER BY seq", r)
    assert [s for s, _ in events] == [3, 4, 5, 6, 7, 8]
    assert await fetch(deps, "SELECT last_seq FROM rooms WHERE name = %s", r) == [(8,)]
    assert await fetch(
        deps, "SELECT last_read_seq FROM memberships WHERE room = %s AND user_id = 'bob'", r
    ) == [(5,)]

    # AND history shows messages only, in their current state, and the event log
    page = await get_json(http_app("history", deps), f"/rooms/{r}/messages")
    assert [(m["seq"], m["text"], m["version"], m["deleted"]) for m in page["messages"]] == [
        (1, "hello, twice", 3, False),
        (2, "", 1, True),
    ]
    assert page["messages"][0]["reply_count"] == 0  # its only reply is deleted
    assert page["messages"][0]["edited_at"] == TS
    thread = await get_json(http_app("history", deps), f"/rooms/{r}/messages", thread=m1)
    assert [m["id"] for m in thread["messages"]] == [m2]
    log_page = await get_json(http_app("history", deps), f"/rooms/{r}/events", after_seq=2, limit=3)
    assert [(e["seq"], e["type"]) for e in log_page["events"]] == [
        (3, "message_updated"),
        (4, "reaction"),
        (5, "reaction"),
    ]
    assert log_page["next_after_seq"] == 5
    everything = await get_json(http_app("history", deps), f"/rooms/{r}/events")
    assert [e["seq"] for e in everything["events"]] == list(range(1, 9))
    assert everything["events"][0]["type"] == "message"


async def test_reactions_count_once_per_user_and_history_sums_them(deps: Deps) -> None:
    room = Room()
    r = room.name
    m1 = message_id("ann", r, "a")
    batch = [
        room.send("ann", "a", "react to me"),
        room.react("bob", m1, "👍", True, "1"),
        room.react("cy", m1, "👍", True, "1"),
        room.react("cy", m1, "👍", False, "2"),
        room.react("cy", m1, "👍", True, "3"),
        room.react("ann", m1, "🎉", True, "1"),
    ]
    result = await message.handle(batch, deps)
    assert result.clean and result.settle is not None
    await asyncio.wait_for(result.settle, timeout=30)
    values = [
        frames.log_entry_json(f).encode()
        for _, f in await deps.redis.xrange(names.recent_log_key(r))
    ]
    # Applied in any order, the newest op of each (message, emoji, user) wins.
    assert (await persist.handle(records(values[::-1][:-1] + values[:1]), deps)).clean
    assert (await persist.handle(records(values), deps)).clean
    page = await get_json(http_app("history", deps), f"/rooms/{r}/messages")
    assert page["messages"][0]["reactions"] == {"👍": 2, "🎉": 1}


async def test_a_read_entry_is_forwarded_and_a_bad_one_is_poison(deps: Deps) -> None:
    r = unique_room("rd")
    good = StreamRecord(id="1-1", fields=inbound.read_entry(r, "ann", 3))
    bad = StreamRecord(id="1-2", fields={**inbound.read_entry(r, "ann", 3), "seq": "-1"})
    result = await message.handle([good, bad], deps)
    assert set(result.poison) == {"1-2"}
    assert result.settle is not None
    await asyncio.wait_for(result.settle, timeout=30)
