"""The history function: room history pages and catch-up over HTTP, one ASGI app."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chat import names
from chat.auth import authenticate_http
from chat.contract import ROOM_RE, ContractError, ErrorCode, Message
from functions import deps as deps_module

MAX_LIMIT = 200
DEFAULT_LIMIT = 50

_STATUS = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}
_decode_message = msgspec.json.Decoder(Message).decode

_COLUMNS = "id::text, room, seq, sender, text, client_msg_id, created_at"


def error_response(code: ErrorCode, message: str, status: int | None = None) -> JSONResponse:
    """The JSON error body every HTTP surface answers with."""
    return JSONResponse(
        {"error": {"code": str(code), "message": message}},
        status_code=status or _STATUS.get(code, 400),
    )


def _int_param(request: Request, name: str, low: int, high: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ContractError(ErrorCode.INVALID_PARAMETER, f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ContractError(ErrorCode.INVALID_PARAMETER, f"{name} must be {bound}")
    return value


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
    return [_decode_message(fields["m"]) for _, fields in entries]


async def messages(request: Request) -> JSONResponse:
    """GET /rooms/{room}/messages: newest page, older pages (before_seq) or catch-up (after_seq)."""
    deps = deps_module.current()
    try:
        authenticate_http(request.headers, deps.settings)
        room = request.path_params["room"]
        if not ROOM_RE.match(room):
            raise ContractError(ErrorCode.INVALID_ROOM, "room must match " + ROOM_RE.pattern)
        limit = _int_param(request, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
        before = _int_param(request, "before_seq", 1)
        after = _int_param(request, "after_seq", 0)
        if before is not None and after is not None:
            raise ContractError(
                ErrorCode.INVALID_PARAMETER, "use before_seq or after_seq, not both"
            )
    except ContractError as exc:
        return error_response(exc.code, exc.message)

    pool = await deps.pool()
    async with pool.connection() as conn:
        if after is not None:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM messages"
                " WHERE room = %s AND seq > %s ORDER BY seq LIMIT %s",
                (room, after, limit),
            )
            stored = [_row_to_message(r) for r in await cur.fetchall()]
            recent = await _recent(room, after + 1, None, limit, newest_first=False)
        else:
            upper = (before - 1) if before is not None else None
            if upper is not None and upper < 1:
                return JSONResponse({"room": room, "messages": [], "next_before_seq": None})
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM messages"
                " WHERE room = %s AND seq <= %s ORDER BY seq DESC LIMIT %s",
                (room, upper if upper is not None else 2**62, limit),
            )
            stored = [_row_to_message(r) for r in await cur.fetchall()]
            recent = await _recent(room, 1, upper, limit, newest_first=True)

    # While persistence lags, the newest messages are only in the recent log: merge by seq.
    by_seq = {m.seq: m for m in recent}
    by_seq.update((m.seq, m) for m in stored)
    ordered = sorted(by_seq)
    page_seqs = ordered[:limit] if after is not None else ordered[-limit:]
    page = [msgspec.to_builtins(by_seq[s]) for s in page_seqs]
    next_before = page_seqs[0] if page_seqs and page_seqs[0] > 1 else None
    return JSONResponse({"room": room, "messages": page, "next_before_seq": next_before})


async def healthz(_: Request) -> JSONResponse:
    """200 when PostgreSQL and Redis answer."""
    deps = deps_module.current()
    try:
        await deps.redis.ping()
        pool = await deps.pool()
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        return error_response(ErrorCode.UNAVAILABLE, f"dependency down: {exc}")
    return JSONResponse({"ok": True})


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_PARAMETER
    return error_response(code, str(exc.detail), exc.status_code)


app = Starlette(
    routes=[Route("/rooms/{room}/messages", messages, methods=["GET"]), Route("/healthz", healthz)],
    exception_handlers={HTTPException: _http_error},
)
