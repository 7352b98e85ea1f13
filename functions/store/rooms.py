"""Rooms and memberships: a room exists from its first message or from an explicit creation."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection

from chat.contract import iso_ms
from functions.store.users import display_name


class Room(msgspec.Struct, frozen=True):
    """A room's metadata, as the rooms route returns it."""

    name: str
    display_name: str | None
    created_by: str | None
    created_at: str
    members: int


async def ensure_user(conn: AsyncConnection[Any], user: str) -> None:
    """Create the user row if it is missing (rooms and memberships reference it)."""
    await conn.execute("INSERT INTO users (id) VALUES (%s) ON CONFLICT DO NOTHING", (user,))


class NotRoomOwner(Exception):
    """The room exists and the caller is neither its creator nor an admin."""


# A new room is the caller's; an existing one changes only for its creator or an admin. A room
# that began with its first message has no creator: only an admin names it. The WHERE of the
# upsert decides under the row lock, so two callers cannot both pass a check made beforehand.
_UPSERT = """
INSERT INTO rooms AS r (name, display_name, created_by) VALUES (%(name)s, %(title)s, %(user)s)
ON CONFLICT (name) DO UPDATE
SET display_name = coalesce(excluded.display_name, r.display_name)
WHERE r.created_by = %(user)s OR %(admin)s
RETURNING 1
"""


async def create_room(
    conn: AsyncConnection[Any],
    name: str,
    title: str | None,
    created_by: str,
    *,
    admin: bool = False,
) -> Room:
    """Create ``name``, or set its display name; the caller becomes a member.

    Raises ``NotRoomOwner`` when the room exists and ``created_by`` did not create it, unless
    ``admin``.
    """
    title = display_name(title)
    async with conn.transaction():
        await ensure_user(conn, created_by)
        cur = await conn.execute(
            _UPSERT, {"name": name, "title": title, "user": created_by, "admin": admin}
        )
        if await cur.fetchone() is None:
            raise NotRoomOwner(name)
        await add_member(conn, name, created_by)
    room = await get_room(conn, name)
    assert room is not None, "the room was created in this transaction"
    return room


async def get_room(conn: AsyncConnection[Any], name: str) -> Room | None:
    """The room called ``name`` with its member count, or None."""
    cur = await conn.execute(
        """
        SELECT r.name, r.display_name, r.created_by, r.created_at,
               (SELECT count(*) FROM memberships m WHERE m.room = r.name)
        FROM rooms r WHERE r.name = %s
        """,
        (name,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Room(
        name=row[0],
        display_name=row[1],
        created_by=row[2],
        created_at=iso_ms(row[3]),
        members=row[4],
    )


async def add_member(conn: AsyncConnection[Any], room: str, user: str) -> None:
    """Make ``user`` a member of ``room`` (both must exist); a no-op when already one."""
    await conn.execute(
        "INSERT INTO memberships (room, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (room, user),
    )


async def remove_member(conn: AsyncConnection[Any], room: str, user: str) -> None:
    """End ``user``'s membership of ``room``; a no-op when not a member."""
    await conn.execute("DELETE FROM memberships WHERE room = %s AND user_id = %s", (room, user))
