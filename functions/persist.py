"""The persist function: write a batch of room events to PostgreSQL, idempotently.

Messages go in by COPY; then the batch's other events are applied in (room, seq) order: an
edit replaces the text (the old one goes to ``message_versions``) when its version is newer,
a delete leaves a tombstone, a reaction records its (message, emoji, user) state as of its
seq, and each of them is kept in ``room_events``. Read positions only move forward. Every
statement is guarded (version, seq, ON CONFLICT), so a batch applied twice, or a redelivered
record, changes nothing. This module decodes and checks the records (``chat.records``); the
statements are ``functions.store.writes``'.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

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
from functions.store import writes


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
                await writes.store_members(conn, new_pairs)
                messages = [r.message for r in rows]
                collided = await writes.store_messages(conn, messages)
                await writes.apply_events(conn, decoded.events, messages, decoded.reads)
        except BaseException:
            writes.forget_staging(conn)
            raise
    _known.add(new_pairs)
    # A seq collision means the sequencer reused a seq (its state was lost): dead-letter the
    # message for an operator rather than drop it silently or retry it forever.
    result.poison.update(
        (row.record.id, f"seq {row.message.seq} of room {row.message.room!r} holds another message")
        for row in rows
        if row.message.id in collided
    )
    return result
