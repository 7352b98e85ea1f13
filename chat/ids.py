"""Message ids: derived from the dedup key, so a retried send gets the same id everywhere."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1d3c2e-93a4-4e7b-9b0e-4c1f5a7d2e10")


def message_id(sender: str, room: str, client_msg_id: str) -> str:
    """The final id of the message ``client_msg_id`` sent by ``sender`` to ``room``."""
    # Length prefixes make the encoding injective whatever characters the parts hold.
    name = f"{len(sender)}:{sender}|{len(room)}:{room}|{client_msg_id}"
    return str(uuid.uuid5(_NAMESPACE, name))
