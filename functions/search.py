"""The search function: full-text search of a room's stored messages, ranked, paged by cursor."""

from __future__ import annotations

import base64
import binascii
import struct

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from functions.deps import Deps
from functions.store import search as store
from functions.web import bad, identify, int_param, readable_room

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_QUERY_CHARS = 256
_CURSOR = struct.Struct(">fq")


def encode_cursor(rank: float, seq: int) -> str:
    """An opaque cursor for the match after (rank, seq)."""
    return base64.urlsafe_b64encode(_CURSOR.pack(rank, seq)).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[float, int]:
    """(rank, seq) from a cursor; raises ``invalid_parameter`` when it is not one of ours."""
    try:
        rank, seq = _CURSOR.unpack(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, struct.error, ValueError):
        raise bad("cursor is not a cursor this route returned") from None
    if not rank >= 0 or seq < 1:
        raise bad("cursor is not a cursor this route returned")
    return float(rank), int(seq)


def _query(request: Request) -> str:
    q = request.query_params.get("q", "").strip()
    if not q:
        raise bad("q must not be empty")
    if len(q) > MAX_QUERY_CHARS or "\x00" in q or not q.isprintable():
        raise bad(f"q must be 1..{MAX_QUERY_CHARS} printable characters")
    return q


async def search(request: Request, deps: Deps) -> Response:
    """GET /rooms/{room}/search?q=...&limit=...&cursor=...: ranked matches, best first."""
    room = readable_room(request, await identify(request, deps), deps.settings)
    q = _query(request)
    limit = int_param(request, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    assert limit is not None
    raw_cursor = request.query_params.get("cursor")
    after = decode_cursor(raw_cursor) if raw_cursor else None
    pool = await deps.pool()
    async with pool.connection() as conn:
        if await store.matches_everything(conn, q):
            raise bad("q must name a word to find: exclusions (-word) alone match everything")
        # One more than asked says whether another page exists.
        hits = await store.search_room(conn, room, q, limit + 1, after)
    page = hits[:limit]
    more = len(hits) > len(page)
    next_cursor = encode_cursor(page[-1]["rank"], page[-1]["seq"]) if more and page else None
    return JSONResponse(
        {
            "room": room,
            "q": q,
            "results": page,
            "next_cursor": next_cursor,
        }
    )
