"""The room-event record: what the message function produces to the messages topic for persist.

Its key is the room, so a room's events share a partition and keep their seq order. Its value
is the event's JSON exactly as clients received it (``chat.frames``): a message (no ``type``),
a ``message_updated``, ``message_deleted`` or ``reaction`` (``type`` first), or a read position
(``type`` ``read``). Persist decodes a message or event into a record view: the wire type's
fields, in its order, with ids as UUIDs and times as datetimes, parsed in C once (a unit test
holds each view to its wire type's fields); a read position holds neither and decodes as is.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from chat.contract import MESSAGE_DELETED, MESSAGE_UPDATED, REACTION, READ, ReadPosition

# Key, value and headers, as the producer takes them.
Record = tuple[str, bytes, None]
# Room events other than messages start with their type (chat.contract); messages never do.
_TYPED = b'{"type":'

_encode = msgspec.json.Encoder().encode


class RecordError(ValueError):
    """A record value that is no room event of this format."""


def encode(room: str, event_json: bytes) -> Record:
    """The record of a room event whose JSON clients received as ``event_json``."""
    return (room, event_json, None)


def encode_read(read: ReadPosition) -> Record:
    """The record of a read position."""
    return (read.room, _encode(read), None)


class MessageRecord(msgspec.Struct, frozen=True):
    """A ``chat.contract.Message`` as persist stores it."""

    id: uuid.UUID
    room: str
    seq: int
    sender: str
    text: str
    client_msg_id: str
    ts: datetime
    reply_to: uuid.UUID | None = None


class UpdatedRecord(msgspec.Struct, frozen=True):
    """A ``chat.contract.MessageUpdated`` as persist stores it."""

    type: str
    id: uuid.UUID
    room: str
    seq: int
    msg_seq: int
    version: int
    text: str
    edited_at: datetime
    sender: str


class DeletedRecord(msgspec.Struct, frozen=True):
    """A ``chat.contract.MessageDeleted`` as persist stores it."""

    type: str
    id: uuid.UUID
    room: str
    seq: int
    msg_seq: int
    deleted_at: datetime


class ReactionRecord(msgspec.Struct, frozen=True):
    """A ``chat.contract.Reaction`` as persist stores it."""

    type: str
    id: uuid.UUID
    room: str
    seq: int
    msg_seq: int
    user: str
    emoji: str
    on: bool


EventRecord = UpdatedRecord | DeletedRecord | ReactionRecord


class _Type(msgspec.Struct):
    type: str


_decode_message = msgspec.json.Decoder(MessageRecord).decode
_decode_type = msgspec.json.Decoder(_Type).decode
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    MESSAGE_UPDATED: msgspec.json.Decoder(UpdatedRecord),
    MESSAGE_DELETED: msgspec.json.Decoder(DeletedRecord),
    REACTION: msgspec.json.Decoder(ReactionRecord),
    READ: msgspec.json.Decoder(ReadPosition),
}


def is_message(value: bytes) -> bool:
    """Whether a record value is a message (else it is a typed event or a read position)."""
    return not value.startswith(_TYPED)


def decode_message(value: bytes) -> MessageRecord:
    """The message a record value carries; RecordError when it is not one."""
    try:
        return _decode_message(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordError(str(exc)) from None


def decode_event(value: bytes) -> EventRecord | ReadPosition:
    """The typed event or read position a record value carries; RecordError when none."""
    try:
        kind = _decode_type(value).type
        decoder = _DECODERS.get(kind)
        if decoder is None:
            raise RecordError(f"unknown event type {kind[:40]!r}")
        event: EventRecord | ReadPosition = decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordError(str(exc)) from None
    return event
