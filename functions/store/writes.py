"""The room events' writes to PostgreSQL, the persist function's SQL: every statement guarded
(version, seq, ON CONFLICT), so a batch applied twice, or a redelivered record, changes nothing.

Run inside one open transaction: ``store_members``, ``store_messages``, then ``apply_events``.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection

from chat.contract import ReadPosition
from chat.records import DeletedRecord, EventRecord, MessageRecord, ReactionRecord, UpdatedRecord

# The batch goes to a per-session staging table by binary COPY (the cheapest way in), and from
# there to the real tables with set-based statements. ON COMMIT DELETE ROWS empties it at commit.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS persist_staging (
    id            uuid        NOT NULL,
    room          text        NOT NULL,
    seq           bigint      NOT NULL,
    sender        text        NOT NULL,
    text          text        NOT NULL,
    client_msg_id text        NOT NULL,
    created_at    timestamptz NOT NULL,
    reply_to      uuid
) ON COMMIT DELETE ROWS
"""
_COPY = (
    "COPY persist_staging (id, room, seq, sender, text, client_msg_id, created_at, reply_to)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["uuid", "text", "int8", "text", "text", "text", "timestamptz", "uuid"]
# Rooms and users first (memberships reference them); sorted so concurrent batches take the
# same keys in the same order.
_METADATA = """
WITH pairs AS (SELECT * FROM unnest(%(rooms)s::text[], %(senders)s::text[]) AS p(room, sender)),
new_users AS (
    INSERT INTO users (id) SELECT DISTINCT sender FROM pairs ORDER BY 1 ON CONFLICT DO NOTHING
),
new_rooms AS (
    INSERT INTO rooms (name) SELECT DISTINCT room FROM pairs ORDER BY 1 ON CONFLICT DO NOTHING
)
SELECT 1
"""
_MEMBERS = """
INSERT INTO memberships (room, user_id)
SELECT DISTINCT room, sender FROM unnest(%(rooms)s::text[], %(senders)s::text[]) AS p(room, sender)
ORDER BY 1, 2 ON CONFLICT DO NOTHING
"""
# A redelivered message hits the primary key and is skipped; the analytics triggers count only
# the rows this statement really inserted.
_INSERT = """
INSERT INTO messages (id, room, seq, sender, text, client_msg_id, created_at, reply_to)
SELECT id, room, seq, sender, text, client_msg_id, created_at, reply_to FROM persist_staging
ORDER BY room, seq
ON CONFLICT DO NOTHING
"""
# The edited or deleted text goes to message_versions first (the same snapshot sees the row
# before its update); the guard on version makes an edit applied twice, or late, a no-op.
_EDIT = """
WITH old AS (
    INSERT INTO message_versions (message_id, version, text, replaced_by, replaced_at)
    SELECT id, version, text, sender, %(at)s FROM messages
    WHERE id = %(id)s AND version < %(version)s AND NOT deleted
    ON CONFLICT DO NOTHING
)
UPDATE messages SET text = %(text)s, version = %(version)s, edited_at = %(at)s
WHERE id = %(id)s AND version < %(version)s AND NOT deleted
"""
_DELETE = """
WITH old AS (
    INSERT INTO message_versions (message_id, version, text, replaced_by, replaced_at)
    SELECT id, version, text, sender, %(at)s FROM messages WHERE id = %(id)s AND NOT deleted
    ON CONFLICT DO NOTHING
)
UPDATE messages SET text = '', deleted = true, deleted_at = %(at)s
WHERE id = %(id)s AND NOT deleted
"""
# The state as of the newest op: a reaction applied again, or before a later one, loses.
_REACT = """
INSERT INTO reactions AS r (message_id, emoji, user_id, "on", seq)
SELECT %(id)s, %(emoji)s, %(user)s, %(on)s, %(seq)s
WHERE EXISTS (SELECT 1 FROM messages WHERE id = %(id)s)
ON CONFLICT (message_id, emoji, user_id) DO UPDATE SET "on" = excluded."on", seq = excluded.seq
WHERE r.seq < excluded.seq
"""
# An event of a message that is not stored (it was dead-lettered) is dropped with it.
_EVENT = """
INSERT INTO room_events (room, seq, type, message_id, payload)
SELECT %(room)s, %(seq)s, %(type)s, %(id)s, %(payload)s::jsonb
WHERE EXISTS (SELECT 1 FROM messages WHERE id = %(id)s)
ON CONFLICT DO NOTHING
"""
_LAST_SEQ = """
UPDATE rooms AS r SET last_seq = v.seq
FROM unnest(%(rooms)s::text[], %(seqs)s::int8[]) AS v(room, seq)
WHERE r.name = v.room AND r.last_seq < v.seq
"""
_READ = """
INSERT INTO memberships AS m (room, user_id, last_read_seq) VALUES (%(room)s, %(user)s, %(seq)s)
ON CONFLICT (room, user_id) DO UPDATE SET last_read_seq = excluded.last_read_seq
WHERE m.last_read_seq < excluded.last_read_seq
"""
# Rows skipped although their id is not stored: their (room, seq) holds another message.
_COLLISIONS = """
SELECT s.id FROM persist_staging s
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = s.id)
"""

# Sessions whose staging table exists: created once per pooled connection, not per batch.
_staged: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()


async def store_members(conn: AsyncConnection[Any], pairs: Sequence[tuple[str, str]]) -> None:
    """Create the users, rooms and memberships of (room, user) ``pairs`` that do not exist."""
    if pairs:
        names = {"rooms": [p[0] for p in pairs], "senders": [p[1] for p in pairs]}
        await conn.execute(_METADATA, names)
        await conn.execute(_MEMBERS, names)


async def store_messages(
    conn: AsyncConnection[Any], messages: Sequence[MessageRecord]
) -> set[uuid.UUID]:
    """Store ``messages``; return the ids of those whose (room, seq) holds another message."""
    if not messages:
        return set()
    if conn not in _staged:
        await conn.execute(_STAGING)
        _staged.add(conn)
    async with conn.cursor().copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for message in messages:
            await copy.write_row(msgspec.structs.astuple(message))
    cur = await conn.execute(_INSERT)
    if cur.rowcount == len(messages):
        return set()
    return {r[0] for r in await (await conn.execute(_COLLISIONS)).fetchall()}


def forget_staging(conn: AsyncConnection[Any]) -> None:
    """After a rollback: the staging table may have gone with the transaction that created it."""
    _staged.discard(conn)


def _event_params(event: EventRecord, payload: bytes) -> dict[str, Any]:
    """The parameters of an event's statements, its payload as clients received it."""
    params: dict[str, Any] = {
        "room": event.room,
        "seq": event.seq,
        "type": event.type,
        "id": event.id,
        "payload": payload.decode(),
    }
    match event:
        case UpdatedRecord():
            params.update(text=event.text, version=event.version, at=event.edited_at)
        case DeletedRecord():
            params["at"] = event.deleted_at
        case ReactionRecord():
            params.update(emoji=event.emoji, user=event.user, on=event.on)
    return params


async def apply_events(
    conn: AsyncConnection[Any],
    events: Sequence[tuple[EventRecord, bytes]],
    messages: Sequence[MessageRecord],
    reads: Sequence[ReadPosition],
) -> None:
    """Apply ``events`` (in seq order, each with its JSON), then the rooms' last seqs (of the
    events and ``messages``) and the read positions."""
    async with conn.cursor() as cur:
        for event, payload in events:
            params = _event_params(event, payload)
            match event:
                case UpdatedRecord():
                    await cur.execute(_EDIT, params)
                case DeletedRecord():
                    await cur.execute(_DELETE, params)
                case ReactionRecord():
                    await cur.execute(_REACT, params)
            await cur.execute(_EVENT, params)
        last: dict[str, int] = {}
        for seq_room, seq in [(m.room, m.seq) for m in messages] + [
            (e.room, e.seq) for e, _ in events
        ]:
            last[seq_room] = max(seq, last.get(seq_room, 0))
        if last:
            rooms = sorted(last)
            await cur.execute(_LAST_SEQ, {"rooms": rooms, "seqs": [last[r] for r in rooms]})
        for read in sorted(reads, key=lambda r: (r.room, r.user)):
            params = {"room": read.room, "user": read.user, "seq": read.last_read_seq}
            await cur.execute(_READ, params)
