"""The sequencing script's Lua builds exactly the bytes the Python codec builds and reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chat import frames
from chat.contract import Message, MessageDeleted, MessageUpdated, Reaction
from devstack import Stack

pytestmark = pytest.mark.integration

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
