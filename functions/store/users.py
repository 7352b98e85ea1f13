"""Users, recorded from their token's claims: the id always, the display name when it is given."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from psycopg import AsyncConnection

from chat.auth import Identity

MAX_DISPLAY_NAME_CHARS = 200

# A display name only overwrites the stored one when it differs, so recording a user who is
# already known with the same name writes nothing.
_RECORD = """
INSERT INTO users AS u (id, display_name) VALUES (%s, %s)
ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, updated_at = now()
WHERE excluded.display_name IS NOT NULL
  AND u.display_name IS DISTINCT FROM excluded.display_name
"""


def display_name(name: str | None) -> str | None:
    """A storable display name: trimmed, non-empty and bounded, else None."""
    if name is None:
        return None
    trimmed = name.strip()[:MAX_DISPLAY_NAME_CHARS]
    return trimmed if trimmed and trimmed.isprintable() else None


async def record_user(conn: AsyncConnection[Any], identity: Identity) -> None:
    """Create the user of ``identity`` if new; keep the display name from its claims."""
    await conn.execute(_RECORD, (identity.user, display_name(identity.name)))


class RecordedUsers:
    """Remembers which (user, name) pairs this process recorded, so each costs one write."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._seen: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._capacity = capacity

    def known(self, identity: Identity) -> bool:
        """True when this process already recorded this user with this name."""
        key = (identity.user, identity.name)
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def remember(self, identity: Identity) -> None:
        """Note that ``identity`` is recorded; the least recently seen is forgotten first."""
        self._seen[(identity.user, identity.name)] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
