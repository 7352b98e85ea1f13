"""The sequencing script's Lua builds exactly the bytes the Python codec builds and reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from chat import frames
from chat.contract import Message, MessageDeleted, MessageUpdated, Reaction
from chat.shards import Shards
from devstack import Stack

_BUILD = (
    frames.MESSAGE_LUA
    + """
local msg = message_json(ARGV[1], tonumber(ARGV[2]), ARGV[3])
return {msg, fanout_frame('message', tonumber(ARGV[2]), event_packet('message', msg))}
"""
)


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(stack.env()["CHAT_REDIS_URL"], decode_responses=False)
    yield client
    await client.aclose()


@pytest.mark.parametrize("seq", [1, 99, 2**53])
async def test_lua_and_python_build_the_same_message_and_frame(
    redis: aioredis.Redis, seq: int
) -> None:
    message = Message(
        id="6d0f6a1e-0000-5000-8000-000000000000",
        room="lua.room:1",
        seq=seq,
        sender="ann",
        text='quotes " backslash \\ pipe | slash / ünïcødé 🎉 \u2028',
        client_msg_id="c-9",
        ts="2026-12-01T10:00:00.000Z",
    )
    head, tail = frames.message_template(message)
    built, frame = await redis.eval(_BUILD, 0, head, str(seq), tail)  # type: ignore[misc]
    assert built == frames.encode_message(message)
    decoded = frames.decode_frame(frame)
    assert decoded == frames.Frame(
        "message", seq, None, frames.event_packet("message", frames.encode_message(message))
    )
    assert frames.decode_message(built) == message


_BUILD_EVENT = (
    frames.MESSAGE_LUA
    + """
local version = nil
if ARGV[4] ~= '' then version = tonumber(ARGV[4]) end
local json = event_json(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), version, ARGV[5])
return {json, op_frame(ARGV[6], ARGV[7], tonumber(ARGV[8]))}
"""
)


@pytest.mark.parametrize(
    "event",
    [
        MessageUpdated(
            "message_updated",
            "i",
            "lua.room",
            2**53,
            7,
            12,
            'a " \\ | é',
            "2026-12-01T10:00:00Z",
            "s",
        ),
        MessageDeleted("message_deleted", "i", "lua.room", 99, 98, "2026-12-01T10:00:00.000Z"),
        Reaction("reaction", "i", "lua.room", 3, 1, "bob", "👍🏽", False),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_lua_and_python_build_the_same_event_and_op_frame(
    redis: aioredis.Redis, event: MessageUpdated | MessageDeleted | Reaction
) -> None:
    head, tail = frames.event_template(event)
    version = str(event.version) if isinstance(event, MessageUpdated) else ""
    op = "6d0f6a1e-0000-5000-8000-000000000000"
    built, op_frame = await redis.eval(  # type: ignore[misc]
        _BUILD_EVENT, 0, head, str(event.seq), str(event.msg_seq), version, tail, op, "ok", "12"
    )
    assert built == frames.encode_room_event(event)
    assert op_frame.decode() == frames.encode_op_frame(op, "ok", 12)


_APPEND = (
    frames.MESSAGE_LUA
    + """
log_append(KEYS[1], 100, tonumber(ARGV[1]), ARGV[2], ARGV[3])
return redis.call('XRANGE', KEYS[1], '-', '+')
"""
)


MESSAGE = b'{"id":"i","seq":7}'
REACTION = b'{"type":"reaction","seq":2251799813685248}'


async def _append_twice(redis: aioredis.Redis, key: str) -> Any:
    await redis.delete(key)
    await redis.eval(_APPEND, 1, key, "7", "message", MESSAGE)  # type: ignore[misc]
    logged = await redis.eval(  # type: ignore[misc]
        _APPEND, 1, key, str(2**51), "reaction", REACTION
    )
    await redis.delete(key)
    return logged


async def test_the_log_entry_lua_appends_is_what_the_python_readers_read(
    shards: Shards,
) -> None:
    # GIVEN a message and a reaction appended by the sequencing script's own Lua, on the node
    # that owns the log's slot (on a cluster, whichever node is its primary now)
    key = "test:frames:log:{lua.room}"
    redis = aioredis.from_url(shards.url_for(await shards.owner(key)), decode_responses=False)
    try:
        logged = await _append_twice(redis, key)
    finally:
        await redis.aclose()
    # THEN the entries' bytes are pinned and the Python readers decode them back
    assert logged == [
        [b"7-0", [b"m", MESSAGE]],
        [f"{2**51}-0".encode(), [b"m", REACTION, b"e", b"reaction"]],
    ]
    entries = [
        (entry_id.decode(), {k.decode(): v.decode() for k, v in zip(f[::2], f[1::2], strict=True)})
        for entry_id, f in logged
    ]
    assert [
        (frames.log_entry_seq(i), frames.log_entry_event(f), frames.log_entry_json(f))
        for i, f in entries
    ] == [(7, "message", MESSAGE.decode()), (2**51, "reaction", REACTION.decode())]
    assert entries[0][0] == frames.log_entry_id(7)
