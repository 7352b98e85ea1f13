"""Edge validators against the real stores: whatever they accept, Redis, Kafka and PG take."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, reject, settings
from hypothesis import strategies as st

from chat import frames
from chat.auth import Identity
from chat.contract import (
    ROOM_PATTERN,
    ContractError,
    ErrorCode,
    Message,
    SendRequest,
    check_user_id,
    parse,
)
from devstack import Stack
from functions import persist
from functions.deps import Deps
from functions.store.rooms import create_room
from functions.store.users import record_user
from tests.integration.persistence_support import fetch, message, records
from tests.integration.runtime_support import create_topics

any_text = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=80)
valid_room = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
room_like = st.one_of(valid_room, valid_room.map(lambda r: r + "\n"), any_text)
send_like = st.fixed_dictionaries(
    {
        "room": room_like,
        "text": st.one_of(any_text, st.text(min_size=1, max_size=4000)),
        "client_msg_id": st.one_of(any_text, st.text(min_size=1, max_size=64)),
    }
)
# Redis runs the message function's script, which splices the seq into the message's JSON.
_SEQUENCED = frames.MESSAGE_LUA + "return message_json(ARGV[1], 1, ARGV[2])"
TOPIC = "test.validation"


@pytest.fixture(scope="module", autouse=True)
def _validation_topic(stack: Stack) -> None:
    create_topics(stack, {TOPIC: 1})


async def test_postgres_holds_the_same_room_pattern_text(deps: Deps) -> None:
    rows = await fetch(
        deps,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conname IN ('rooms_name_check', 'messages_room_check')",
    )
    assert len(rows) == 2
    for _, definition in rows:
        assert ROOM_PATTERN in definition, definition


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(room_like, min_size=1, max_size=20))
async def test_the_room_rule_is_the_same_in_python_and_postgresql(
    deps: Deps, rooms: list[str]
) -> None:
    # Only what PostgreSQL can hold at all can be asked about: no NUL, no lone surrogate.
    storable = [
        r for r in rooms if "\x00" not in r and not any(0xD800 <= ord(c) < 0xE000 for c in r)
    ]
    if not storable:
        return
    rows = await fetch(
        deps, "SELECT r, r ~ %s FROM unnest(%s::text[]) AS r", ROOM_PATTERN, storable
    )
    for room, matches in rows:
        try:
            parse(SendRequest, {"room": room, "text": "x", "client_msg_id": "c"})
            accepted = True
        except ContractError as exc:
            assert exc.code is ErrorCode.INVALID_ROOM
            accepted = False
        assert accepted == matches, repr(room)


async def _redis_accepts(deps: Deps, request: SendRequest, sender: str) -> None:
    stream = f"test:validation:{uuid.uuid4().hex}"
    fields = {"room": request.room, "text": request.text, "client_msg_id": request.client_msg_id}
    entry = await deps.redis.xadd(stream, {**fields, "sender": sender})
    ((_, stored),) = await deps.redis.xrange(stream, entry, entry)
    await deps.redis.delete(stream)
    assert stored == {**fields, "sender": sender}
    sequenced = Message(
        id=str(uuid.uuid4()),
        room=request.room,
        seq=1,
        sender=sender,
        text=request.text,
        client_msg_id=request.client_msg_id,
        ts="2026-12-01T00:00:00.000Z",
    )
    head, tail = frames.message_template(sequenced)
    encoded: Any = await deps.redis.eval(_SEQUENCED, 0, head, tail)
    assert frames.decode_message(encoded) == sequenced


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(send_like, min_size=1, max_size=15), st.text(min_size=1, max_size=128))
async def test_whatever_the_validator_accepts_every_store_accepts(
    deps: Deps, payloads: list[dict[str, Any]], sender: str
) -> None:
    try:
        identity = Identity(user=check_user_id(sender))
    except ContractError:
        reject()  # a run of rejects alone fails as Unsatisfiable: it cannot pass on nothing
    accepted: list[SendRequest] = []
    for payload in payloads:
        try:
            accepted.append(parse(SendRequest, payload))
        except ContractError as exc:
            assert exc.code in set(ErrorCode)
    assume(accepted)
    for request in accepted:
        await _redis_accepts(deps, request, sender)
    msgs = [
        msgspec.structs.replace(
            message(r.room, seq, sender=sender, text=r.text),
            client_msg_id=r.client_msg_id,
            id=str(uuid.uuid4()),
        )
        for seq, r in enumerate(accepted, start=1 + uuid.uuid4().int % 2**40)
    ]
    await deps.produce(TOPIC, [(m.room, msgspec.json.encode(m), None) for m in msgs])
    result = await persist.handle(records(msgs), deps)
    assert result.clean, result
    stored = await fetch(
        deps,
        "SELECT id::text, room, text, client_msg_id FROM messages WHERE id = ANY(%s::uuid[])",
        [m.id for m in msgs],
    )
    assert sorted(stored) == sorted((m.id, m.room, m.text, m.client_msg_id) for m in msgs)
    pool = await deps.pool()
    async with pool.connection() as conn:
        await record_user(conn, identity)
        for r in accepted:
            await create_room(conn, r.room, None, sender, admin=True)
