"""The persist function: write a batch of room events to PostgreSQL, idempotently.

Messages go in by COPY; then the batch's other events are applied in (room, seq) order: an
edit replaces the text (the old one goes to ``message_versions``) when its version is newer,
a delete leaves a tombstone, a reaction records its (message, emoji, user) state as of its
seq, and each of them is kept in ``room_events``. Read positions only move forward. Every
statement is guarded (version, seq, ON CONFLICT), so a batch applied twice, or a redelivered
record, changes nothing.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from psycopg import AsyncConnection

from chat import records
from chat.contract import (
    MAX_SEQ,
    ContractError,
    ErrorCode,
    ReadPosition,
    check_client_msg_id,
    check_emoji,
    check_room,
    check_text,
    check_user_id,
)
from chat.records import (
    DeletedRecord,
    EventRecord,
    MessageRecord,
    ReactionRecord,
    UpdatedRecord,
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
    created_at    timestamptz NOT NULL,
    reply_to      uuid
) ON COMMIT DELETE ROWS
"""
_COPY = (
    "COPY persist_staging (id, room, seq, sender, text, client_msg_id, created_at, reply_to)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["uuid", "text", "int8", "text", "text", "text", "timestamptz", "uuid"]
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
INSERT INTO messages (id, room, seq, sender, text, client_msg_id, created_at, reply_to)
SELECT id, room, seq, sender, text, client_msg_id, created_at, reply_to FROM persist_staging
ORDER BY room, seq
ON CONFLICT DO NOTHING
"""
# The edited or deleted text goes to message_versions first (the same snapshot sees the row
# before its update); the guard on version makes an edit applied twice, or late, a no-op.
_EDIT = """
WITH old AS (
    INSERT INTO message_versions (message_id, version, text, replaced_by, replaced_at)
    SELECT id, version, text, sender, %(at)s FROM messages
    WHERE id = %(id)s AND version < %(version)s AND NOT deleted
    ON CONFLICT DO NOTHING
)
UPDATE messages SET text = %(text)s, version = %(version)s, edited_at = %(at)s
WHERE id = %(id)s AND version < %(version)s AND NOT deleted
"""
_DELETE = """
WITH old AS (
    INSERT INTO message_versions (message_id, version, text, replaced_by, replaced_at)
    SELECT id, version, text, sender, %(at)s FROM messages WHERE id = %(id)s AND NOT deleted
    ON CONFLICT DO NOTHING
)
UPDATE messages SET text = '', deleted = true, deleted_at = %(at)s
WHERE id = %(id)s AND NOT deleted
"""
# The state as of the newest op: a reaction applied again, or before a later one, loses.
_REACT = """
INSERT INTO reactions AS r (message_id, emoji, user_id, "on", seq)
SELECT %(id)s, %(emoji)s, %(user)s, %(on)s, %(seq)s
WHERE EXISTS (SELECT 1 FROM messages WHERE id = %(id)s)
ON CONFLICT (message_id, emoji, user_id) DO UPDATE SET "on" = excluded."on", seq = excluded.seq
WHERE r.seq < excluded.seq
"""
# An event of a message that is not stored (it was dead-lettered) is dropped with it.
_EVENT = """
INSERT INTO room_events (room, seq, type, message_id, payload)
SELECT %(room)s, %(seq)s, %(type)s, %(id)s, %(payload)s::jsonb
WHERE EXISTS (SELECT 1 FROM messages WHERE id = %(id)s)
ON CONFLICT DO NOTHING
"""
_LAST_SEQ = """
UPDATE rooms AS r SET last_seq = v.seq
FROM unnest(%(rooms)s::text[], %(seqs)s::int8[]) AS v(room, seq)
WHERE r.name = v.room AND r.last_seq < v.seq
"""
_READ = """
INSERT INTO memberships AS m (room, user_id, last_read_seq) VALUES (%(room)s, %(user)s, %(seq)s)
ON CONFLICT (room, user_id) DO UPDATE SET last_read_seq = excluded.last_read_seq
WHERE m.last_read_seq < excluded.last_read_seq
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


@dataclass(frozen=True, slots=True)
class _Row:
    record: KafkaRecord
    message: MessageRecord


@dataclass(slots=True)
class _Batch:
    rows: list[_Row]
    # Each event with its JSON exactly as clients received it.
    events: list[tuple[EventRecord, bytes]]
    reads: list[ReadPosition]


def _check(message: MessageRecord) -> None:
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


def _check_event(event: EventRecord | ReadPosition) -> None:
    """Raise ValueError naming what makes a room event or read position unstorable."""
    try:
        check_room(event.room)
        if isinstance(event, ReadPosition):
            check_user_id(event.user, ErrorCode.INVALID_PAYLOAD)
            if not 0 <= event.last_read_seq <= MAX_SEQ:
                raise ValueError(f"last_read_seq {event.last_read_seq} out of range")
            return
        if not (1 <= event.seq <= MAX_SEQ and 1 <= event.msg_seq < event.seq):
            raise ValueError(f"seq {event.seq} / msg_seq {event.msg_seq} out of range")
        match event:
            case UpdatedRecord():
                check_user_id(event.sender, ErrorCode.INVALID_PAYLOAD)
                if check_text(event.text) != event.text:
                    raise ValueError("text is not trimmed")
                if not 2 <= event.version <= 2**31 - 1 or event.edited_at.tzinfo is None:
                    raise ValueError("version out of range or edited_at without time zone")
            case DeletedRecord():
                if event.deleted_at.tzinfo is None:
                    raise ValueError("deleted_at has no time zone")
            case ReactionRecord():
                check_user_id(event.user, ErrorCode.INVALID_PAYLOAD)
                check_emoji(event.emoji)
    except ContractError as exc:
        raise ValueError(f"{exc.code}: {exc.message}") from None


def _decode_event(record: KafkaRecord) -> EventRecord | ReadPosition:
    event = records.decode_event(record.value)
    _check_event(event)
    return event


def _decode_batch(batch: Sequence[KafkaRecord], result: BatchResult) -> _Batch:
    rows: dict[uuid.UUID, _Row] = {}
    events: dict[tuple[str, int], tuple[EventRecord, bytes]] = {}
    reads: list[ReadPosition] = []
    for record in batch:
        if not records.is_message(record.value):
            try:
                event = _decode_event(record)
            except ValueError as exc:
                result.poison[record.id] = f"unstorable event: {exc}"
                continue
            if isinstance(event, ReadPosition):
                reads.append(event)
            else:
                events.setdefault((event.room, event.seq), (event, record.value))
            continue
        try:
            message = records.decode_message(record.value)
        except records.RecordError as exc:
            result.poison[record.id] = f"undecodable message: {exc}"
            continue
        try:
            _check(message)
        except ValueError as exc:
            result.poison[record.id] = f"unstorable message {message.id}: {exc}"
            continue
        # The same message twice in a batch (a producer retry) is stored once.
        rows.setdefault(message.id, _Row(record, message))
    ordered = [events[key] for key in sorted(events)]
    return _Batch(list(rows.values()), ordered, reads)


async def _store(
    conn: AsyncConnection[Any], rows: Sequence[_Row], new_pairs: list[tuple[str, str]]
) -> dict[str, str]:
    """Store ``rows`` in the open transaction; return the records whose seq is taken, and why."""
    if new_pairs:
        names = {"rooms": [p[0] for p in new_pairs], "senders": [p[1] for p in new_pairs]}
        await conn.execute(_METADATA, names)
        await conn.execute(_MEMBERS, names)
    if not rows:
        return {}
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


def _event_params(event: EventRecord, payload: bytes) -> dict[str, Any]:
    """The parameters of an event's statements, its payload as clients received it."""
    params: dict[str, Any] = {
        "room": event.room,
        "seq": event.seq,
        "type": event.type,
        "id": event.id,
        "payload": payload.decode(),
    }
    match event:
        case UpdatedRecord():
            params.update(text=event.text, version=event.version, at=event.edited_at)
        case DeletedRecord():
            params["at"] = event.deleted_at
        case ReactionRecord():
            params.update(emoji=event.emoji, user=event.user, on=event.on)
    return params


async def _apply(conn: AsyncConnection[Any], batch: _Batch) -> None:
    """Apply the batch's events in seq order, then the rooms' last seqs and read positions."""
    async with conn.cursor() as cur:
        for event, payload in batch.events:
            params = _event_params(event, payload)
            match event:
                case UpdatedRecord():
                    await cur.execute(_EDIT, params)
                case DeletedRecord():
                    await cur.execute(_DELETE, params)
                case ReactionRecord():
                    await cur.execute(_REACT, params)
            await cur.execute(_EVENT, params)
        last: dict[str, int] = {}
        for seq_room, seq in [(r.message.room, r.message.seq) for r in batch.rows] + [
            (e.room, e.seq) for e, _ in batch.events
        ]:
            last[seq_room] = max(seq, last.get(seq_room, 0))
        if last:
            rooms = sorted(last)
            await cur.execute(_LAST_SEQ, {"rooms": rooms, "seqs": [last[r] for r in rooms]})
        for read in sorted(batch.reads, key=lambda r: (r.room, r.user)):
            params = {"room": read.room, "user": read.user, "seq": read.last_read_seq}
            await cur.execute(_READ, params)


async def handle(batch: Sequence[KafkaRecord], deps: Deps) -> BatchResult:
    """Store the batch's events in one transaction; unstorable records are poison."""
    result = BatchResult()
    decoded = _decode_batch(batch, result)
    rows = decoded.rows
    if not rows and not decoded.events and not decoded.reads:
        return result
    pairs = {(r.message.room, r.message.sender) for r in rows}
    pairs |= {(r.room, r.user) for r in decoded.reads}
    new_pairs = _known.unknown(pairs)
    pool = await deps.pool()
    async with pool.connection() as conn:
        try:
            async with conn.transaction():
                collisions = await _store(conn, rows, new_pairs)
                await _apply(conn, decoded)
        except BaseException:
            # The staging table may have gone with the rolled-back transaction that created it.
            _staged.discard(conn)
            raise
    _known.add(new_pairs)
    # A seq collision means the sequencer reused a seq (its state was lost): dead-letter the
    # message for an operator rather than drop it silently or retry it forever.
    result.poison.update(collisions)
    return result
