"""The persist function: write a batch of sequenced messages to PostgreSQL, idempotently."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from chat.contract import Message
from functions.batch import BatchResult, KafkaRecord
from functions.deps import Deps

_decode = msgspec.json.Decoder(Message).decode

# One statement per batch; a redelivered batch hits the primary key and writes nothing twice.
_INSERT = """
INSERT INTO messages (id, room, seq, sender, text, client_msg_id, created_at)
SELECT * FROM unnest(
    %s::uuid[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::timestamptz[]
)
ON CONFLICT DO NOTHING
"""


def _valid(message: Message) -> str | None:
    if message.seq < 1:
        return "seq must be positive"
    if "\x00" in message.text or "\x00" in message.sender or "\x00" in message.client_msg_id:
        return "NUL character"
    try:
        datetime.fromisoformat(message.ts)
    except ValueError:
        return f"bad ts {message.ts!r}"
    return None


async def handle(batch: Sequence[KafkaRecord], deps: Deps) -> BatchResult:
    """Insert the batch's messages in one transaction; undecodable records are poison."""
    result = BatchResult()
    messages: dict[str, Message] = {}
    for record in batch:
        try:
            message = _decode(record.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            result.poison[record.id] = f"undecodable message: {exc}"
            continue
        problem = _valid(message)
        if problem:
            result.poison[record.id] = problem
            continue
        messages[message.id] = message
    if not messages:
        return result
    rows = list(messages.values())
    pool = await deps.pool()
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            _INSERT,
            (
                [m.id for m in rows],
                [m.room for m in rows],
                [m.seq for m in rows],
                [m.sender for m in rows],
                [m.text for m in rows],
                [m.client_msg_id for m in rows],
                [m.ts for m in rows],
            ),
        )
    return result
