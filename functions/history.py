"""The history function: room history pages, threads, the event catch-up and the caller's rooms.

History items are messages in their current state (text, version, deleted, reaction counts,
reply count) as PostgreSQL holds them; the newest, not yet persisted messages come from the
room's recent log (Redis) as they were sent, until their events are persisted too (the
persistence lag). ``/events`` is the room's event log itself: every kind, each with its type.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat import frames, names
from chat.auth import Identity
from chat.contract import ContractError, Message, check_message_id, iso_ms
from functions import deps as deps_module
from functions.retention import cutoff_for
from functions.web import bad, error_response, identify, int_param, json_app, readable_room

MAX_LIMIT = 200
DEFAULT_LIMIT = 50

__all__ = ["app", "error_response", "events", "messages", "my_rooms"]


class HistoryMessage(Message, frozen=True):
    """A message as history pages show it: the live fields and its current state."""

    version: int = 1
    edited_at: str | None = None
    deleted: bool = False
    reactions: dict[str, int] = msgspec.field(default_factory=dict)
    reply_count: int = 0


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
_MY_ROOMS = """
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


def _row_to_message(row: tuple[Any, ...]) -> HistoryMessage:
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


_decode_history = msgspec.json.Decoder(HistoryMessage).decode


async def _recent_entries(
    room: str, low: int, high: int | None, wanted: int, newest_first: bool, messages_only: bool
) -> list[tuple[int, str, str]]:
    """(seq, event, JSON) of the room's recent log with ``low <= seq <= high``, up to ``wanted``
    (messages only when asked: reading on past the other events, within the log's length)."""
    deps = deps_module.current()
    redis: Any = deps.redis
    key = names.recent_log_key(room)
    lo, hi = frames.log_entry_id(low), ("+" if high is None else frames.log_entry_id(high))
    out: list[tuple[int, str, str]] = []
    budget = deps.settings.recent_log_len
    while budget > 0:
        count = min(budget, max(wanted * 2, 50))
        if newest_first:
            entries = await redis.xrevrange(key, hi, lo, count=count)
        else:
            entries = await redis.xrange(key, lo, hi, count=count)
        budget -= count
        for entry_id, fields in entries:
            event = frames.log_entry_event(fields)
            if messages_only and event != "message":
                continue
            try:
                out.append((frames.log_entry_seq(entry_id), event, frames.log_entry_json(fields)))
            except frames.FrameError:
                continue  # a damaged log entry must not fail the page
        if len(out) >= wanted or len(entries) < count:
            break
        last = frames.log_entry_seq(entries[-1][0])
        if newest_first:
            hi = frames.log_excluding(last)
        else:
            lo = frames.log_excluding(last)
    return out[:wanted] if len(out) > wanted else out


def _fresh(ts: str) -> bool:
    days = deps_module.current().settings.retention_days
    if days <= 0:
        return True
    # Retention trims the recent logs after deleting rows; until then, and whatever happens
    # between, an entry older than the cutoff is never served.
    oldest = iso_ms(cutoff_for(days))
    return ts >= oldest


async def _recent(
    room: str, low: int, high: int | None, limit: int, newest_first: bool
) -> list[HistoryMessage]:
    """Messages from the room's recent log with ``low <= seq <= high``, as they were sent."""
    out: list[HistoryMessage] = []
    for _seq, _event, raw in await _recent_entries(room, low, high, limit, newest_first, True):
        try:
            message = _decode_history(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # the stored copy answers for it
        if _fresh(message.ts):
            out.append(message)
    return out


def _params(request: Request, identity: Identity) -> tuple[str, int, int | None, int | None]:
    room = readable_room(request, identity)
    limit = int_param(request, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    assert limit is not None
    before = int_param(request, "before_seq", 1)
    after = int_param(request, "after_seq", 0)
    if before is not None and after is not None:
        raise bad("use before_seq or after_seq, not both")
    return room, limit, before, after


class _Page(msgspec.Struct):
    room: str
    messages: list[HistoryMessage]
    next_before_seq: int | None


_encode = msgspec.json.Encoder().encode


async def _stored(sql: str, params: tuple[object, ...]) -> list[HistoryMessage]:
    pool = await deps_module.current().pool()
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return [_row_to_message(r) for r in await cur.fetchall()]


def _thread_param(request: Request) -> str | None:
    raw = request.query_params.get("thread")
    if raw is None:
        return None
    try:
        return check_message_id(raw, "thread")
    except ContractError:
        raise bad("thread must be a message id") from None


async def messages(request: Request) -> Response:
    """GET /rooms/{room}/messages: newest page, older pages (before_seq), catch-up (after_seq),
    or a thread (thread=<id>: the replies to that message, ascending, after after_seq)."""
    room, limit, before, after = _params(request, await identify(request))
    thread = _thread_param(request)
    if thread is not None:
        if before is not None:
            raise bad("a thread pages with after_seq")
        return await _thread(room, thread, after or 0, limit)
    # PostgreSQL and the recent log are read at the same time: a page costs one round trip.
    if after is not None:
        stored, recent = await asyncio.gather(
            _stored(_AFTER, (room, after, limit)),
            _recent(room, after + 1, None, limit, newest_first=False),
        )
    else:
        upper = (before - 1) if before is not None else None
        if upper is not None and upper < 1:
            return JSONResponse({"room": room, "messages": [], "next_before_seq": None})
        stored, recent = await asyncio.gather(
            _stored(_UP_TO, (room, upper if upper is not None else 2**62, limit)),
            _recent(room, 1, upper, limit, newest_first=True),
        )

    # While persistence lags, the newest messages are only in the recent log: merge by seq.
    by_seq = {m.seq: m for m in recent}
    by_seq.update((m.seq, m) for m in stored)
    ordered = sorted(by_seq)
    page_seqs = ordered[:limit] if after is not None else ordered[-limit:]
    next_before = page_seqs[0] if page_seqs and page_seqs[0] > 1 else None
    page = _Page(room, [by_seq[s] for s in page_seqs], next_before)
    return Response(_encode(page), media_type="application/json")


async def _thread(room: str, parent: str, after: int, limit: int) -> Response:
    stored, recent = await asyncio.gather(
        _stored(_THREAD, (parent, room, after, limit)),
        _recent(room, after + 1, None, deps_module.current().settings.recent_log_len, False),
    )
    by_seq = {m.seq: m for m in recent if m.reply_to == parent}
    by_seq.update((m.seq, m) for m in stored)
    replies = [by_seq[s] for s in sorted(by_seq)[:limit]]
    body = {"room": room, "thread": parent, "messages": replies}
    return Response(_encode(body), media_type="application/json")


async def events(request: Request) -> Response:
    """GET /rooms/{room}/events?after_seq=&limit=: every event kind after a seq, ascending."""
    room = readable_room(request, await identify(request))
    limit = int_param(request, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    after = int_param(request, "after_seq", 0, default=0)
    assert limit is not None and after is not None
    pool = await deps_module.current().pool()

    async def stored() -> list[tuple[Any, ...]]:
        async with pool.connection() as conn:
            cur = await conn.execute(_EVENTS, {"room": room, "after": after, "limit": limit})
            return await cur.fetchall()

    rows, recent = await asyncio.gather(
        stored(), _recent_entries(room, after + 1, None, limit, False, False)
    )
    by_seq: dict[int, bytes] = {}
    for seq, event, raw in recent:
        if event == "message":
            by_seq[seq] = _typed("message", raw.encode())
        else:
            by_seq[seq] = raw.encode()
    for seq, payload, *message in rows:
        if payload is not None:
            by_seq[seq] = _encode(payload)
            continue
        msg_id, sender, text, client_msg_id, created_at, reply_to = message
        item = {
            "type": "message",
            "id": msg_id,
            "room": room,
            "seq": seq,
            "sender": sender,
            "text": text,
            "client_msg_id": client_msg_id,
            "ts": _iso(created_at),
            "reply_to": reply_to,
        }
        by_seq[seq] = _encode(item)
    seqs = sorted(by_seq)[:limit]
    body = b'{"room":' + _encode(room) + b',"events":[' + b",".join(by_seq[s] for s in seqs)
    body += b'],"next_after_seq":' + (str(seqs[-1]).encode() if seqs else b"null") + b"}"
    return Response(body, media_type="application/json")


def _typed(event: str, raw: bytes) -> bytes:
    """An event's JSON with its ``type`` first (messages carry none of their own)."""
    return b'{"type":' + _encode(event) + b"," + raw[1:]


async def my_rooms(request: Request) -> Response:
    """GET /me/rooms: the caller's rooms with their last seq, read position and unread count."""
    identity = await identify(request)
    pool = await deps_module.current().pool()
    async with pool.connection() as conn, conn.transaction():
        # The planner prices the count for every room, read or not, and would JIT-compile
        # the query: at 10,000 rooms the compilation costs several times the execution.
        await conn.execute("SET LOCAL jit = off")
        cur = await conn.execute(_MY_ROOMS, (identity.user,))
        rows = await cur.fetchall()
    rooms = [
        {"room": room, "last_seq": last, "last_read_seq": read, "unread": unread}
        for room, last, read, unread in rows
    ]
    return Response(_encode({"rooms": rooms}), media_type="application/json")


app = json_app(
    [
        ("/rooms/{room}/messages", messages, ["GET"]),
        ("/rooms/{room}/events", events, ["GET"]),
        ("/me/rooms", my_rooms, ["GET"]),
    ]
)
