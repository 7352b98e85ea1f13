"""The analytics function: messages per room per day, active users per day, busiest rooms."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.auth import Identity, authorize_room
from chat.contract import ContractError
from chat.settings import Settings
from functions.deps import Deps
from functions.store import analytics as store
from functions.web import as_json, bad, date_param, identify, int_param, readable_room

MAX_DAYS = 366
DEFAULT_DAYS = 30
MAX_ROOMS = 100
DEFAULT_ROOMS = 10


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


def _visible(identity: Identity, settings: Settings) -> Callable[[str], bool]:
    """Whether ``identity`` may see a room: private rooms not granted to it are left out."""

    def visible(room: str) -> bool:
        try:
            authorize_room(identity, room, settings)
        except ContractError:
            return False
        return True

    return visible


async def room_daily(request: Request, deps: Deps) -> Response:
    """GET /analytics/rooms/{room}/daily?since=&until=: the room's messages per day."""
    room = readable_room(request, await identify(request, deps), deps.settings)
    since, until = _window(request)
    pool = await deps.pool()
    async with pool.connection() as conn:
        rows = await store.room_daily(conn, room, since, until)
    return JSONResponse(
        {
            "room": room,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "days": [{"day": as_json(d), "messages": n} for d, n in rows],
        }
    )


async def active_users(request: Request, deps: Deps) -> Response:
    """GET /analytics/active-users?since=&until=: users who posted, per day."""
    await identify(request, deps)
    since, until = _window(request)
    pool = await deps.pool()
    async with pool.connection() as conn:
        rows = await store.active_users(conn, since, until)
    return JSONResponse(
        {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "days": [{"day": as_json(d), "active_users": n} for d, n in rows],
        }
    )


async def busiest_rooms(request: Request, deps: Deps) -> Response:
    """GET /analytics/busiest-rooms?since=&until=&limit=: rooms by messages in the window."""
    identity = await identify(request, deps)
    since, until = _window(request)
    limit = int_param(request, "limit", 1, MAX_ROOMS, DEFAULT_ROOMS)
    assert limit is not None
    pool = await deps.pool()
    async with pool.connection() as conn:
        rows = await store.busiest_rooms(
            conn, since, until, limit, _visible(identity, deps.settings)
        )
    return JSONResponse(
        {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "rooms": [{"room": r, "messages": n} for r, n in rows],
        }
    )
