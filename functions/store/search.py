"""Full-text search of a room's stored messages, ranked, paged by a (rank, seq) keyset."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from functions.store.history import message_json

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
# querytree() is the part of a query an index can answer; "T" means none: a query made only of
# exclusions (-word, or "a or -b") would rank every message of the room.
_INDEXABLE = f"SELECT querytree(websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', %s))"


async def matches_everything(conn: AsyncConnection[Any], q: str) -> bool:
    """Whether ``q`` has no part an index can answer (exclusions alone)."""
    tree = await (await conn.execute(_INDEXABLE, (q,))).fetchone()
    return tree is not None and tree[0] == "T"


async def search_room(
    conn: AsyncConnection[Any],
    room: str,
    q: str,
    limit: int,
    after: tuple[float, int] | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` matches of ``q`` in ``room``, best first, after the (rank, seq) ``after``.

    Each match is the stored message's JSON with its ``rank``.
    """
    after_rank, after_seq = after if after is not None else (None, None)
    cur = await conn.execute(
        _SEARCH,
        {"q": q, "room": room, "after_rank": after_rank, "after_seq": after_seq, "limit": limit},
    )
    return [
        {**message_json(room, seq, msg_id, sender, text, client_msg_id, created_at), "rank": rank}
        for msg_id, seq, sender, text, client_msg_id, created_at, rank in await cur.fetchall()
    ]
