"""Deleting old messages: the oldest day still held, batches within a time slice, activity."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection

# The oldest day that still has messages, from the analytics rollup's day index: no scan.
_OLDEST_DAY = "SELECT min(day) FROM room_daily_stats WHERE day < %s"
# One batch within a time slice. The created_at BRIN index reads only the slice's block
# ranges, so the rows a previous batch left dead are not read again by every later batch.
# SKIP LOCKED lets a second runner (or a writer on an old row) pass instead of queueing.
_DELETE_BATCH = """
DELETE FROM messages WHERE id IN (
    SELECT id FROM messages WHERE created_at >= %s AND created_at < %s
    LIMIT %s FOR UPDATE SKIP LOCKED
)
RETURNING room, seq
"""
# Activity rows of the removed days: the messages are gone, so are the figures about them.
# (Room counters follow the deleted rows through the analytics trigger.)
_DELETE_ACTIVITY = "DELETE FROM user_daily_activity WHERE day < %s"


async def oldest_day(conn: AsyncConnection[Any], before: date) -> date | None:
    """The oldest day before ``before`` that the rollup says has messages, or None."""
    row = await (await conn.execute(_OLDEST_DAY, (before,))).fetchone()
    return row[0] if row else None


async def delete_messages(
    conn: AsyncConnection[Any], low: datetime, high: datetime, limit: int
) -> list[tuple[str, int]]:
    """Delete up to ``limit`` messages created in [low, high); (room, seq) of each deleted."""
    cur = await conn.execute(_DELETE_BATCH, (low, high, limit))
    return [(room, seq) for room, seq in await cur.fetchall()]


async def delete_activity(conn: AsyncConnection[Any], before: date) -> None:
    """Delete the daily activity rows of the days before ``before``."""
    await conn.execute(_DELETE_ACTIVITY, (before,))
