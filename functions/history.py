"""The history function: room history pages, threads, the event catch-up and the caller's rooms.

History items are messages in their current state (text, version, deleted, reaction counts,
reply count) as PostgreSQL holds them; the newest, not yet persisted messages come from the
room's recent log (Redis) as they were sent, until their events are persisted too (the
persistence lag). ``/events`` is the room's event log itself: every kind, each with its type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat import frames, names
from chat.auth import Identity
from chat.contract import ContractError, check_message_id, iso_ms
from functions.deps import Deps
from functions.retention import cutoff_for
from functions.store import history as store
from functions.store.history import HistoryMessage
from functions.web import bad, error_response, identify, int_param, readable_room

MAX_LIMIT = 200
DEFAULT_LIMIT = 50

__all__ = ["HistoryMessage", "error_response", "events", "messages", "my_rooms"]


_decode_history = msgspec.json.Decoder(HistoryMessage).decode


async def _recent_entries(
    deps: Deps,
    room: str,
    low: int,
    high: int | None,
    wanted: int,
    newest_first: bool,
    messages_only: bool,
) -> list[tuple[int, str, str]]:
    """(seq, event, JSON) of the room's recent log with ``low <= seq <= high``, up to ``wanted``
    (messages only when asked: reading on past the other events, within the log's length)."""
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


def _fresh(deps: Deps, ts: str) -> bool:
    days = deps.settings.retention_days
    if days <= 0:
        return True
    # Retention trims the recent logs after deleting rows; until then, and whatever happens
    # between, an entry older than the cutoff is never served.
    oldest = iso_ms(cutoff_for(days))
    return ts >= oldest


async def _recent(
    deps: Deps, room: str, low: int, high: int | None, limit: int, newest_first: bool
) -> list[HistoryMessage]:
    """Messages from the room's recent log with ``low <= seq <= high``, as they were sent."""
    out: list[HistoryMessage] = []
    for _seq, _event, raw in await _recent_entries(
        deps, room, low, high, limit, newest_first, True
    ):
        try:
            message = _decode_history(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # the stored copy answers for it
        if _fresh(deps, message.ts):
            out.append(message)
    return out


def _params(
    request: Request, identity: Identity, deps: Deps
) -> tuple[str, int, int | None, int | None]:
    room = readable_room(request, identity, deps.settings)
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
T = TypeVar("T")


async def _stored(deps: Deps, read: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``read(conn, *args)`` on a pooled connection."""
    pool = await deps.pool()
    async with pool.connection() as conn:
        return await read(conn, *args)


def _thread_param(request: Request) -> str | None:
    raw = request.query_params.get("thread")
    if raw is None:
        return None
    try:
        return check_message_id(raw, "thread")
    except ContractError:
        raise bad("thread must be a message id") from None


async def messages(request: Request, deps: Deps) -> Response:
    """GET /rooms/{room}/messages: newest page, older pages (before_seq), catch-up (after_seq),
    or a thread (thread=<id>: the replies to that message, ascending, after after_seq)."""
    room, limit, before, after = _params(request, await identify(request, deps), deps)
    thread = _thread_param(request)
    if thread is not None:
        if before is not None:
            raise bad("a thread pages with after_seq")
        return await _thread(deps, room, thread, after or 0, limit)
    # PostgreSQL and the recent log are read at the same time: a page costs one round trip.
    if after is not None:
        stored, recent = await asyncio.gather(
            _stored(deps, store.messages_after, room, after, limit),
            _recent(deps, room, after + 1, None, limit, newest_first=False),
        )
    else:
        upper = (before - 1) if before is not None else None
        if upper is not None and upper < 1:
            return JSONResponse({"room": room, "messages": [], "next_before_seq": None})
        stored, recent = await asyncio.gather(
            _stored(
                deps, store.messages_up_to, room, store.NEWEST if upper is None else upper, limit
            ),
            _recent(deps, room, 1, upper, limit, newest_first=True),
        )

    # While persistence lags, the newest messages are only in the recent log: merge by seq.
    by_seq = {m.seq: m for m in recent}
    by_seq.update((m.seq, m) for m in stored)
    ordered = sorted(by_seq)
    page_seqs = ordered[:limit] if after is not None else ordered[-limit:]
    next_before = page_seqs[0] if page_seqs and page_seqs[0] > 1 else None
    page = _Page(room, [by_seq[s] for s in page_seqs], next_before)
    return Response(_encode(page), media_type="application/json")


async def _thread(deps: Deps, room: str, parent: str, after: int, limit: int) -> Response:
    stored, recent = await asyncio.gather(
        _stored(deps, store.replies_after, room, parent, after, limit),
        _recent(deps, room, after + 1, None, deps.settings.recent_log_len, False),
    )
    by_seq = {m.seq: m for m in recent if m.reply_to == parent}
    by_seq.update((m.seq, m) for m in stored)
    replies = [by_seq[s] for s in sorted(by_seq)[:limit]]
    body = {"room": room, "thread": parent, "messages": replies}
    return Response(_encode(body), media_type="application/json")


async def events(request: Request, deps: Deps) -> Response:
    """GET /rooms/{room}/events?after_seq=&limit=: every event kind after a seq, ascending."""
    room = readable_room(request, await identify(request, deps), deps.settings)
    limit = int_param(request, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    after = int_param(request, "after_seq", 0, default=0)
    assert limit is not None and after is not None
    rows, recent = await asyncio.gather(
        _stored(deps, store.events_after, room, after, limit),
        _recent_entries(deps, room, after + 1, None, limit, False, False),
    )
    by_seq: dict[int, bytes] = {}
    for seq, event, raw in recent:
        if event == "message":
            by_seq[seq] = _typed("message", raw.encode())
        else:
            by_seq[seq] = raw.encode()
    by_seq.update((seq, _encode(item)) for seq, item in rows.items())
    seqs = sorted(by_seq)[:limit]
    body = b'{"room":' + _encode(room) + b',"events":[' + b",".join(by_seq[s] for s in seqs)
    body += b'],"next_after_seq":' + (str(seqs[-1]).encode() if seqs else b"null") + b"}"
    return Response(body, media_type="application/json")


def _typed(event: str, raw: bytes) -> bytes:
    """An event's JSON with its ``type`` first (messages carry none of their own)."""
    return b'{"type":' + _encode(event) + b"," + raw[1:]


async def my_rooms(request: Request, deps: Deps) -> Response:
    """GET /me/rooms: the caller's rooms with their last seq, read position and unread count."""
    identity = await identify(request, deps)
    rooms = await _stored(deps, store.my_rooms, identity.user)
    return Response(_encode({"rooms": rooms}), media_type="application/json")
