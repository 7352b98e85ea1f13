"""The search function: full-text search of a room's stored messages, ranked, paged by cursor."""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.contract import iso_ms
from functions import deps as deps_module
from functions.web import bad, identify, int_param, json_app, readable_room

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_QUERY_CHARS = 256
# Must be the configuration of the messages.search column (migration 0003).
TEXT_SEARCH_CONFIG = "english"

# websearch_to_tsquery takes any user text ("quoted phrases", or, -not) and never raises a
# syntax error. The (room, search) GIN index finds the room's matches; ts_rank orders them, most
# relevant first, newest first among equals. The cursor is the last row's (rank, seq): a keyset,
# so a page never repeats or skips a match because others arrived meanwhile. ts_rank is a real
# (float4); the cursor carries its exact bits and compares as real, so equality holds.
_SEARCH = f"""
WITH q AS (SELECT websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', %(q)s) AS query),
hits AS (
    SELECT m.id, m.seq, m.sender, m.text, m.client_msg_id, m.created_at,
           ts_rank(m.search, q.query) AS rank
    FROM messages m, q
    WHERE m.room = %(room)s AND m.search @@ q.query AND NOT m.deleted
)
SELECT id::text, seq, sender, text, client_msg_id, created_at, rank FROM hits
WHERE %(after_rank)s::real IS NULL OR (rank, seq) < (%(after_rank)s::real, %(after_seq)s::bigint)
ORDER BY rank DESC, seq DESC
LIMIT %(limit)s
"""
_CURSOR = struct.Struct(">fq")
# querytree() is the part of a query an index can answer; "T" means none: a query made only of
# exclusions (-word, or "a or -b") would rank every message of the room. Those are refused.
_INDEXABLE = f"SELECT querytree(websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', %s))"


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


def _hit(room: str, row: tuple[Any, ...]) -> dict[str, Any]:
    msg_id, seq, sender, text, client_msg_id, created_at, rank = row
    return {
        "id": msg_id,
        "room": room,
        "seq": seq,
        "sender": sender,
        "text": text,
        "client_msg_id": client_msg_id,
        "ts": iso_ms(created_at),
        "rank": rank,
    }


async def search(request: Request) -> Response:
    """GET /rooms/{room}/search?q=...&limit=...&cursor=...: ranked matches, best first."""
    room = readable_room(request, await identify(request))
    q = _query(request)
    limit = int_param(request, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    raw_cursor = request.query_params.get("cursor")
    after_rank, after_seq = decode_cursor(raw_cursor) if raw_cursor else (None, None)
    pool = await deps_module.current().pool()
    async with pool.connection() as conn:
        tree = await (await conn.execute(_INDEXABLE, (q,))).fetchone()
        if tree is not None and tree[0] == "T":
            raise bad("q must name a word to find: exclusions (-word) alone match everything")
        cur = await conn.execute(
            _SEARCH,
            {
                "q": q,
                "room": room,
                "after_rank": after_rank,
                "after_seq": after_seq,
                # One more than asked says whether another page exists.
                "limit": (limit or DEFAULT_LIMIT) + 1,
            },
        )
        rows = await cur.fetchall()
    page = rows[:limit]
    more = len(rows) > len(page)
    next_cursor = encode_cursor(page[-1][6], page[-1][1]) if more and page else None
    return JSONResponse(
        {
            "room": room,
            "q": q,
            "results": [_hit(room, r) for r in page],
            "next_cursor": next_cursor,
        }
    )


app = json_app([("/rooms/{room}/search", search, ["GET"])])
