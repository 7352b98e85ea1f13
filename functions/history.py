"""The history function: room history pages and catch-up over HTTP, one ASGI app."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat import frames, names
from chat.auth import Identity
from chat.contract import Message
from functions import deps as deps_module
from functions.retention import cutoff_for
from functions.web import bad, error_response, identify, int_param, json_app, readable_room

MAX_LIMIT = 200
DEFAULT_LIMIT = 50

__all__ = ["app", "error_response", "messages"]


# Both pages read the (room, seq) unique index as a range: a page costs `limit` index entries
# whatever the room's size, and a page boundary is a seq, never an offset, so messages arriving
# meanwhile never shift a page (no gap, no duplicate).
_COLUMNS = "id::text, room, seq, sender, text, client_msg_id, created_at"
_AFTER = f"SELECT {_COLUMNS} FROM messages WHERE room = %s AND seq > %s ORDER BY seq LIMIT %s"
_UP_TO = f"SELECT {_COLUMNS} FROM messages WHERE room = %s AND seq <= %s ORDER BY seq DESC LIMIT %s"


def _row_to_message(row: tuple[Any, ...]) -> Message:
    msg_id, room, seq, sender, text, client_msg_id, created_at = row
    ts = created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Message(
        id=msg_id, room=room, seq=seq, sender=sender, text=text, client_msg_id=client_msg_id, ts=ts
    )


async def _recent(
    room: str, low: int, high: int | None, limit: int, newest_first: bool
) -> list[Message]:
    """Messages from the room's recent log with ``low <= seq <= high``."""
    redis: Any = deps_module.current().redis
    lo, hi = f"{low}-0", ("+" if high is None else f"{high}-0")
    if newest_first:
        entries = await redis.xrevrange(names.recent_log_key(room), hi, lo, count=limit)
    else:
        entries = await redis.xrange(names.recent_log_key(room), lo, hi, count=limit)
    out: list[Message] = []
    for _, fields in entries:
        try:
            out.append(frames.decode_message(frames.log_entry_json(fields)))
        except frames.FrameError:
            # A damaged log entry must not fail the page; the stored copy answers for it.
            continue
    days = deps_module.current().settings.retention_days
    if days > 0:
        # Retention trims the recent logs after deleting rows; until then, and whatever
        # happens between, an entry older than the cutoff is never served.
        oldest = cutoff_for(days).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out = [m for m in out if m.ts >= oldest]
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
    messages: list[Message]
    next_before_seq: int | None


_encode_page = msgspec.json.Encoder().encode


async def _stored(sql: str, params: tuple[object, ...]) -> list[Message]:
    pool = await deps_module.current().pool()
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return [_row_to_message(r) for r in await cur.fetchall()]


async def messages(request: Request) -> Response:
    """GET /rooms/{room}/messages: newest page, older pages (before_seq) or catch-up (after_seq)."""
    room, limit, before, after = _params(request, await identify(request))
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
    return Response(_encode_page(page), media_type="application/json")


app = json_app([("/rooms/{room}/messages", messages, ["GET"])])
