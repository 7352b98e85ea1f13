"""The persist function: write a batch of sequenced messages to PostgreSQL, idempotently."""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection

from chat.contract import (
    MAX_SEQ,
    ContractError,
    ErrorCode,
    check_client_msg_id,
    check_room,
    check_text,
    check_user_id,
)
from functions.batch import BatchResult, KafkaRecord
from functions.deps import Deps

# The batch goes to a per-session staging table by binary COPY (the cheapest way in), and from
# there to the real tables with set-based statements. ON COMMIT DELETE ROWS empties it at commit.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS persist_staging (
    id            uuid        NOT NULL,
    room          text        NOT NULL,
    seq           bigint      NOT NULL,
    sender        text        NOT NULL,
    text          text        NOT NULL,
    client_msg_id text        NOT NULL,
    created_at    timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""
_COPY = (
    "COPY persist_staging (id, room, seq, sender, text, client_msg_id, created_at)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["uuid", "text", "int8", "text", "text", "text", "timestamptz"]
# Rooms and users first (memberships reference them); sorted so concurrent batches take the
# same keys in the same order.
_METADATA = """
WITH pairs AS (SELECT * FROM unnest(%(rooms)s::text[], %(senders)s::text[]) AS p(room, sender)),
new_users AS (
    INSERT INTO users (id) SELECT DISTINCT sender FROM pairs ORDER BY 1 ON CONFLICT DO NOTHING
),
new_rooms AS (
    INSERT INTO rooms (name) SELECT DISTINCT room FROM pairs ORDER BY 1 ON CONFLICT DO NOTHING
)
SELECT 1
"""
_MEMBERS = """
INSERT INTO memberships (room, user_id)
SELECT DISTINCT room, sender FROM unnest(%(rooms)s::text[], %(senders)s::text[]) AS p(room, sender)
ORDER BY 1, 2 ON CONFLICT DO NOTHING
"""
# A redelivered message hits the primary key and is skipped; the analytics triggers count only
# the rows this statement really inserted.
_INSERT = """
INSERT INTO messages (id, room, seq, sender, text, client_msg_id, created_at)
SELECT id, room, seq, sender, text, client_msg_id, created_at FROM persist_staging
ORDER BY room, seq
ON CONFLICT DO NOTHING
"""
# Rows skipped although their id is not stored: their (room, seq) holds another message.
_COLLISIONS = """
SELECT s.id FROM persist_staging s
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = s.id)
"""

# Sessions whose staging table exists: created once per pooled connection, not per batch.
_staged: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()


class _KnownMembers:
    """(room, sender) pairs this process stored, so steady traffic skips the metadata upserts."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._pairs: set[tuple[str, str]] = set()
        self._capacity = capacity

    def unknown(self, pairs: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs not yet known, sorted."""
        return sorted(pairs - self._pairs)

    def add(self, pairs: list[tuple[str, str]]) -> None:
        """Remember ``pairs`` (after their transaction committed)."""
        if len(self._pairs) + len(pairs) > self._capacity:
            # Forgetting everything costs one round of idempotent upserts; no LRU bookkeeping
            # on the hot path.
            self._pairs.clear()
        self._pairs.update(pairs)


_known = _KnownMembers()


class _Stored(msgspec.Struct, frozen=True, array_like=False):
    """A wire ``Message`` with its id and ts decoded to typed values, in the COPY's order."""

    id: uuid.UUID
    room: str
    seq: int
    sender: str
    text: str
    client_msg_id: str
    ts: datetime


# Decoding straight into typed fields parses the uuid and the timestamp in C, once.
_decode = msgspec.json.Decoder(_Stored).decode


@dataclass(frozen=True, slots=True)
class _Row:
    record: KafkaRecord
    message: _Stored


def _check(message: _Stored) -> None:
    """Raise ValueError naming what makes ``message`` unstorable: the edge's own validators."""
    if not 1 <= message.seq <= MAX_SEQ:
        raise ValueError(f"seq {message.seq} out of range")
    if message.ts.tzinfo is None:
        raise ValueError("ts has no time zone")
    try:
        check_room(message.room)
        check_user_id(message.sender, ErrorCode.INVALID_PAYLOAD)
        check_client_msg_id(message.client_msg_id)
        # Stored text is the trimmed text the edge accepted: checking must not change it.
        if check_text(message.text) != message.text:
            raise ValueError("text is not trimmed")
    except ContractError as exc:
        raise ValueError(f"{exc.code}: {exc.message}") from None


def _decode_batch(batch: Sequence[KafkaRecord], result: BatchResult) -> list[_Row]:
    rows: dict[uuid.UUID, _Row] = {}
    for record in batch:
        try:
            message = _decode(record.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            result.poison[record.id] = f"undecodable message: {exc}"
            continue
        try:
            _check(message)
        except ValueError as exc:
            result.poison[record.id] = f"unstorable message {message.id}: {exc}"
            continue
        # The same message twice in a batch (a producer retry) is stored once.
        rows.setdefault(message.id, _Row(record, message))
    return list(rows.values())


async def _store(
    conn: AsyncConnection[Any], rows: Sequence[_Row], new_pairs: list[tuple[str, str]]
) -> dict[str, str]:
    """Store ``rows`` in the open transaction; return the records whose seq is taken, and why."""
    if new_pairs:
        names = {"rooms": [p[0] for p in new_pairs], "senders": [p[1] for p in new_pairs]}
        await conn.execute(_METADATA, names)
        await conn.execute(_MEMBERS, names)
    if conn not in _staged:
        await conn.execute(_STAGING)
        _staged.add(conn)
    async with conn.cursor().copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for row in rows:
            await copy.write_row(msgspec.structs.astuple(row.message))
    cur = await conn.execute(_INSERT)
    if cur.rowcount == len(rows):
        return {}
    collided = {r[0] for r in await (await conn.execute(_COLLISIONS)).fetchall()}
    return {
        row.record.id: f"seq {row.message.seq} of room {row.message.room!r} holds another message"
        for row in rows
        if row.message.id in collided
    }


async def handle(batch: Sequence[KafkaRecord], deps: Deps) -> BatchResult:
    """Insert the batch's messages in one transaction; unstorable records are poison."""
    result = BatchResult()
    rows = _decode_batch(batch, result)
    if not rows:
        return result
    new_pairs = _known.unknown({(r.message.room, r.message.sender) for r in rows})
    pool = await deps.pool()
    async with pool.connection() as conn:
        try:
            async with conn.transaction():
                collisions = await _store(conn, rows, new_pairs)
        except BaseException:
            # The staging table may have gone with the rolled-back transaction that created it.
            _staged.discard(conn)
            raise
    _known.add(new_pairs)
    # A seq collision means the sequencer reused a seq (its state was lost): dead-letter the
    # message for an operator rather than drop it silently or retry it forever.
    result.poison.update(collisions)
    return result
