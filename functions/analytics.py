"""The analytics function: messages per room per day, active users per day, busiest rooms."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.auth import Identity, authorize_room
from chat.contract import ContractError
from functions import deps as deps_module
from functions.web import as_json, bad, date_param, identify, int_param, json_app, readable_room

MAX_DAYS = 366
DEFAULT_DAYS = 30
MAX_ROOMS = 100
DEFAULT_ROOMS = 10

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


def _window(request: Request) -> tuple[date, date]:
    """The ``since``..``until`` window (inclusive UTC dates), default the last 30 days."""
    today = datetime.now(UTC).date()
    until = date_param(request, "until", today)
    since = date_param(request, "since", until - timedelta(days=DEFAULT_DAYS - 1))
    if since > until:
        raise bad("since must not be after until")
    if (until - since).days >= MAX_DAYS:
        raise bad(f"the window spans at most {MAX_DAYS} days")
    return since, until


async def _rows(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    pool = await deps_module.current().pool()
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


def _visible(identity: Identity, room: str) -> bool:
    try:
        authorize_room(identity, room, deps_module.current().settings)
    except ContractError:
        return False
    return True


async def _visible_busiest(
    identity: Identity, since: date, until: date, limit: int
) -> list[tuple[str, int]]:
    """The busiest rooms ``identity`` may see: private rooms not granted to it are left out."""
    out: list[tuple[str, int]] = []
    pool = await deps_module.current().pool()
    # A server-side cursor: only as many ranked rooms cross the wire as filtering needs.
    async with (
        pool.connection() as conn,
        conn.transaction(),
        conn.cursor(name="busiest") as cur,
    ):
        await cur.execute(_BUSIEST, (since, until))
        while len(out) < limit:
            chunk = await cur.fetchmany(limit * 2)
            if not chunk:
                break
            out.extend((r, n) for r, n in chunk if _visible(identity, r))
    return out[:limit]


async def room_daily(request: Request) -> Response:
    """GET /analytics/rooms/{room}/daily?since=&until=: the room's messages per day."""
    room = readable_room(request, await identify(request))
    since, until = _window(request)
    rows = await _rows(_ROOM_DAILY, (room, since, until))
    return JSONResponse(
        {
            "room": room,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "days": [{"day": as_json(d), "messages": n} for d, n in rows],
        }
    )


async def active_users(request: Request) -> Response:
    """GET /analytics/active-users?since=&until=: users who posted, per day."""
    await identify(request)
    since, until = _window(request)
    rows = await _rows(_ACTIVE_USERS, (since, until))
    return JSONResponse(
        {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "days": [{"day": as_json(d), "active_users": n} for d, n in rows],
        }
    )


async def busiest_rooms(request: Request) -> Response:
    """GET /analytics/busiest-rooms?since=&until=&limit=: rooms by messages in the window."""
    identity = await identify(request)
    since, until = _window(request)
    limit = int_param(request, "limit", 1, MAX_ROOMS, DEFAULT_ROOMS)
    assert limit is not None
    rows = await _visible_busiest(identity, since, until, limit)
    return JSONResponse(
        {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "rooms": [{"room": r, "messages": n} for r, n in rows],
        }
    )


app = json_app(
    [
        ("/analytics/rooms/{room}/daily", room_daily, ["GET"]),
        ("/analytics/active-users", active_users, ["GET"]),
        ("/analytics/busiest-rooms", busiest_rooms, ["GET"]),
    ]
)
