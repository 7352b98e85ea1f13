"""The rooms function: create a room with a display name, read a room's metadata."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.contract import ContractError, ErrorCode
from functions import deps as deps_module
from functions.store.rooms import NotRoomOwner, create_room, get_room
from functions.store.users import MAX_DISPLAY_NAME_CHARS
from functions.web import bad, identify, json_app, read_json, readable_room


async def put_room(request: Request) -> Response:
    """PUT /rooms/{room} {"display_name": str}: create the room, or rename it; caller joins.

    Renaming is for the room's creator, or a caller whose token has ``"admin": true``.
    """
    identity = await identify(request)
    room = readable_room(request, identity)
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "the body must be a JSON object")
    title = payload.get("display_name")
    if title is not None and (
        not isinstance(title, str)
        or not 1 <= len(title.strip()) <= MAX_DISPLAY_NAME_CHARS
        or not title.isprintable()
    ):
        raise bad(f"display_name must be 1..{MAX_DISPLAY_NAME_CHARS} printable characters")
    pool = await deps_module.current().pool()
    try:
        async with pool.connection() as conn:
            created = await create_room(conn, room, title, identity.user, admin=identity.admin)
    except NotRoomOwner:
        raise ContractError(
            ErrorCode.FORBIDDEN,
            f"room {room!r} belongs to its creator: only they or an admin may change it",
        ) from None
    return JSONResponse(msgspec.to_builtins(created))


async def room_info(request: Request) -> Response:
    """GET /rooms/{room}: the room's metadata and member count, 404 when it does not exist."""
    room = readable_room(request, await identify(request))
    pool = await deps_module.current().pool()
    async with pool.connection() as conn:
        found = await get_room(conn, room)
    if found is None:
        raise ContractError(ErrorCode.NOT_FOUND, f"no room {room!r}")
    return JSONResponse(msgspec.to_builtins(found))


app = json_app([("/rooms/{room}", room_info, ["GET"]), ("/rooms/{room}", put_room, ["PUT"])])
