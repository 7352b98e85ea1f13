"""Reading a room's history from PostgreSQL: message pages, threads, the event log, my rooms."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection

from chat.contract import Message, iso_ms

# The highest seq a page "up to" reads when the caller names none.
NEWEST = 2**62


class HistoryMessage(Message, frozen=True):
    """A message as history pages show it: the live fields and its current state."""

    version: int = 1
    edited_at: str | None = None
    deleted: bool = False
    reactions: dict[str, int] = msgspec.field(default_factory=dict)
    reply_count: int = 0


class MyRoom(msgspec.Struct, frozen=True):
    """One of a user's rooms: its last seq, the user's read position and unread count."""

    room: str
    last_seq: int
    last_read_seq: int
    unread: int


# Both pages read the (room, seq) unique index as a range: a page costs `limit` index entries
# whatever the room's size, and a page boundary is a seq, never an offset, so messages arriving
# meanwhile never shift a page (no gap, no duplicate). Reaction counts and reply counts are one
# index probe per message of the page (reactions' primary key, the reply_to index).
_COLUMNS = """
m.id::text, m.room, m.seq, m.sender, m.text, m.client_msg_id, m.created_at, m.reply_to::text,
m.version, m.edited_at, m.deleted,
(SELECT coalesce(jsonb_object_agg(emoji, n), '{}'::jsonb) FROM (
    SELECT emoji, count(*) AS n FROM reactions r WHERE r.message_id = m.id AND r."on"
    GROUP BY emoji) counts),
(SELECT count(*) FROM messages c WHERE c.reply_to = m.id AND NOT c.deleted)
"""
_AFTER = f"SELECT {_COLUMNS} FROM messages m WHERE room = %s AND seq > %s ORDER BY seq LIMIT %s"
_UP_TO = (
    f"SELECT {_COLUMNS} FROM messages m WHERE room = %s AND seq <= %s ORDER BY seq DESC LIMIT %s"
)
_THREAD = (
    f"SELECT {_COLUMNS} FROM messages m"
    " WHERE reply_to = %s AND room = %s AND seq > %s ORDER BY seq LIMIT %s"
)
# The event log after a seq: messages (as stored now) and the other events, merged by seq.
_EVENTS = """
(SELECT seq, NULL::jsonb AS payload, id::text, sender, text, client_msg_id, created_at,
        reply_to::text
 FROM messages WHERE room = %(room)s AND seq > %(after)s ORDER BY seq LIMIT %(limit)s)
UNION ALL
(SELECT seq, payload, NULL, NULL, NULL, NULL, NULL, NULL
 FROM room_events WHERE room = %(room)s AND seq > %(after)s ORDER BY seq LIMIT %(limit)s)
ORDER BY seq LIMIT %(limit)s
"""
# Rooms read up to their last seq cost nothing; the others count their unread messages
# through the (room, seq) index, from the read position on.
MY_ROOMS = """
SELECT m.room, r.last_seq, m.last_read_seq,
       CASE WHEN r.last_seq <= m.last_read_seq THEN 0 ELSE (
           SELECT count(*) FROM messages x
           WHERE x.room = m.room AND x.seq > m.last_read_seq
             AND x.sender <> m.user_id AND NOT x.deleted)
       END
FROM memberships m JOIN rooms r ON r.name = m.room
WHERE m.user_id = %s
ORDER BY m.room
"""


def _iso(ts: Any) -> str | None:
    return None if ts is None else iso_ms(ts)


def _message(row: tuple[Any, ...]) -> HistoryMessage:
    (
        msg_id,
        room,
        seq,
        sender,
        text,
        client_msg_id,
        created_at,
        reply_to,
        version,
        edited_at,
        deleted,
        reactions,
        reply_count,
    ) = row
    return HistoryMessage(
        id=msg_id,
        room=room,
        seq=seq,
        sender=sender,
        text=text,
        client_msg_id=client_msg_id,
        ts=_iso(created_at) or "",
        reply_to=reply_to,
        version=version,
        edited_at=_iso(edited_at),
        deleted=deleted,
        reactions=reactions,
        reply_count=reply_count,
    )


def message_json(
    room: str, seq: int, msg_id: str, sender: str, text: str, client_msg_id: str, created_at: Any
) -> dict[str, Any]:
    """A stored message's wire fields, in the wire's order, from its columns."""
    return {
        "id": msg_id,
        "room": room,
        "seq": seq,
        "sender": sender,
        "text": text,
        "client_msg_id": client_msg_id,
        "ts": _iso(created_at),
    }


async def _messages(
    conn: AsyncConnection[Any], sql: str, params: tuple[object, ...]
) -> list[HistoryMessage]:
    cur = await conn.execute(sql, params)
    return [_message(r) for r in await cur.fetchall()]


async def messages_after(
    conn: AsyncConnection[Any], room: str, after: int, limit: int
) -> list[HistoryMessage]:
    """Up to ``limit`` stored messages of ``room`` after seq ``after``, oldest first."""
    return await _messages(conn, _AFTER, (room, after, limit))


async def messages_up_to(
    conn: AsyncConnection[Any], room: str, upper: int, limit: int
) -> list[HistoryMessage]:
    """Up to ``limit`` stored messages of ``room`` with seq <= ``upper``, newest first."""
    return await _messages(conn, _UP_TO, (room, upper, limit))


async def replies_after(
    conn: AsyncConnection[Any], room: str, parent: str, after: int, limit: int
) -> list[HistoryMessage]:
    """Up to ``limit`` stored replies to ``parent`` in ``room`` after seq ``after``."""
    return await _messages(conn, _THREAD, (parent, room, after, limit))


async def events_after(
    conn: AsyncConnection[Any], room: str, after: int, limit: int
) -> dict[int, dict[str, Any]]:
    """Up to ``limit`` stored events of ``room`` after seq ``after``: seq -> the event's JSON.

    Messages are shown as stored now, with ``"type": "message"``; the other events are their
    stored payloads, which carry their own type.
    """
    cur = await conn.execute(_EVENTS, {"room": room, "after": after, "limit": limit})
    out: dict[int, dict[str, Any]] = {}
    for seq, payload, *message in await cur.fetchall():
        if payload is not None:
            out[seq] = payload
            continue
        *stored, reply_to = message
        out[seq] = {"type": "message", **message_json(room, seq, *stored), "reply_to": reply_to}
    return out


async def my_rooms(conn: AsyncConnection[Any], user: str) -> list[MyRoom]:
    """The rooms ``user`` is a member of, by name, with their unread counts."""
    async with conn.transaction():
        # The planner prices the count for every room, read or not, and would JIT-compile
        # the query: at 10,000 rooms the compilation costs several times the execution.
        await conn.execute("SET LOCAL jit = off")
        cur = await conn.execute(MY_ROOMS, (user,))
        rows = await cur.fetchall()
    return [MyRoom(*row) for row in rows]
