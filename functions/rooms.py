"""The rooms function: create a room with a display name, read a room's metadata."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.contract import ContractError, ErrorCode
from functions.deps import Deps
from functions.store.rooms import NotRoomOwner, create_room, get_room
from functions.store.users import MAX_DISPLAY_NAME_CHARS
from functions.web import bad, identify, read_json, readable_room


async def put_room(request: Request, deps: Deps) -> Response:
    """PUT /rooms/{room} {"display_name": str}: create the room, or rename it; caller joins.

    Renaming is for the room's creator, or a caller whose token has ``"admin": true``.
    """
    identity = await identify(request, deps)
    room = readable_room(request, identity, deps.settings)
    payload = await read_json(request, deps.settings)
    if not isinstance(payload, dict):
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "the body must be a JSON object")
    title = payload.get("display_name")
    if title is not None and (
        not isinstance(title, str)
        or not 1 <= len(title.strip()) <= MAX_DISPLAY_NAME_CHARS
        or not title.isprintable()
    ):
        raise bad(f"display_name must be 1..{MAX_DISPLAY_NAME_CHARS} printable characters")
    pool = await deps.pool()
    try:
        async with pool.connection() as conn:
            created = await create_room(conn, room, title, identity.user, admin=identity.admin)
    except NotRoomOwner:
        raise ContractError(
            ErrorCode.FORBIDDEN,
            f"room {room!r} belongs to its creator: only they or an admin may change it",
        ) from None
    return JSONResponse(msgspec.to_builtins(created))


async def room_info(request: Request, deps: Deps) -> Response:
    """GET /rooms/{room}: the room's metadata and member count, 404 when it does not exist."""
    room = readable_room(request, await identify(request, deps), deps.settings)
    pool = await deps.pool()
    async with pool.connection() as conn:
        found = await get_room(conn, room)
    if found is None:
        raise ContractError(ErrorCode.NOT_FOUND, f"no room {room!r}")
    return JSONResponse(msgspec.to_builtins(found))
