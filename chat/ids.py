"""Message ids: derived from the dedup key, so a retried send gets the same id everywhere."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1d3c2e-93a4-4e7b-9b0e-4c1f5a7d2e10")


def message_id(sender: str, room: str, client_msg_id: str) -> str:
    """The final id of the message ``client_msg_id`` sent by ``sender`` to ``room``."""
    # Length prefixes make the encoding injective whatever characters the parts hold.
    name = f"{len(sender)}:{sender}|{len(room)}:{room}|{client_msg_id}"
    return str(uuid.uuid5(_NAMESPACE, name))


_OP_NAMESPACE = uuid.UUID("2c5b8f04-7d1e-4a6b-8e3f-91a0c4d7b6e2")


def op_id(user: str, room: str, client_op_id: str) -> str:
    """The id of the op (edit, delete, react) ``client_op_id`` of ``user`` in ``room``."""
    name = f"{len(user)}:{user}|{len(room)}:{room}|{client_op_id}"
    return str(uuid.uuid5(_OP_NAMESPACE, name))
