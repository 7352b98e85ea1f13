"""The analytics rollups: messages per room per day, active users per day, busiest rooms."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from psycopg import AsyncConnection

# Every query reads the rollup tables of migration 0004 over a window of days, through an index
# whose leading columns are the filter: the cost follows the window, not the message count.
_ROOM_DAILY = """
SELECT day, messages FROM room_daily_stats
WHERE room = %s AND day BETWEEN %s AND %s ORDER BY day
"""
_ACTIVE_USERS = """
SELECT day, count(*) FROM user_daily_activity
WHERE day BETWEEN %s AND %s GROUP BY day ORDER BY day
"""
_BUSIEST = """
SELECT room, sum(messages)::bigint AS messages FROM room_daily_stats
WHERE day BETWEEN %s AND %s GROUP BY room ORDER BY messages DESC, room
"""


async def room_daily(
    conn: AsyncConnection[Any], room: str, since: date, until: date
) -> list[tuple[date, int]]:
    """(day, messages) of ``room`` for each day of ``since..until`` that has any."""
    cur = await conn.execute(_ROOM_DAILY, (room, since, until))
    return [(day, n) for day, n in await cur.fetchall()]


async def active_users(
    conn: AsyncConnection[Any], since: date, until: date
) -> list[tuple[date, int]]:
    """(day, users who posted) for each day of ``since..until`` that has any."""
    cur = await conn.execute(_ACTIVE_USERS, (since, until))
    return [(day, n) for day, n in await cur.fetchall()]


async def busiest_rooms(
    conn: AsyncConnection[Any], since: date, until: date, limit: int, keep: Callable[[str], bool]
) -> list[tuple[str, int]]:
    """The ``limit`` busiest rooms over ``since..until`` that ``keep``: (room, messages)."""
    out: list[tuple[str, int]] = []
    # A server-side cursor: only as many ranked rooms cross the wire as filtering needs.
    async with conn.transaction(), conn.cursor(name="busiest") as cur:
        await cur.execute(_BUSIEST, (since, until))
        while len(out) < limit:
            chunk = await cur.fetchmany(limit * 2)
            if not chunk:
                break
            out.extend((room, n) for room, n in chunk if keep(room))
    return out[:limit]
