"""The room-event record: the value produced is the JSON clients got; persist reads it typed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from chat import frames, records
from chat.contract import Message, MessageDeleted, MessageUpdated, Reaction, ReadPosition

ID = "0b6e2f1c-5a3d-5e7f-8a9b-0c1d2e3f4a5b"
TS = "2026-12-01T10:00:00.123Z"
AT = datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC)


def test_a_records_key_is_its_room_and_its_value_the_events_json() -> None:
    message = Message(ID, "lobby", 3, "ann", "hi", "c-1", TS)
    value = frames.encode_message(message)
    assert records.encode("lobby", value) == ("lobby", value, None)
    assert records.encode_read(ReadPosition("read", "lobby", "ann", 9)) == (
        "lobby",
        b'{"type":"read","room":"lobby","user":"ann","last_read_seq":9}',
        None,
    )


def test_a_message_value_decodes_with_typed_id_and_time() -> None:
    value = frames.encode_message(Message(ID, "lobby", 3, "ann", "hi", "c-1", TS, reply_to=ID))
    assert records.is_message(value)
    assert records.decode_message(value) == records.MessageRecord(
        uuid.UUID(ID), "lobby", 3, "ann", "hi", "c-1", AT, uuid.UUID(ID)
    )


@pytest.mark.parametrize(
    ("event", "view"),
    [
        (
            MessageUpdated("message_updated", ID, "r", 9, 4, 2, "new", TS, "ann"),
            records.UpdatedRecord("message_updated", uuid.UUID(ID), "r", 9, 4, 2, "new", AT, "ann"),
        ),
        (
            MessageDeleted("message_deleted", ID, "r", 9, 4, TS),
            records.DeletedRecord("message_deleted", uuid.UUID(ID), "r", 9, 4, AT),
        ),
        (
            Reaction("reaction", ID, "r", 9, 4, "bob", "🎉", True),
            records.ReactionRecord("reaction", uuid.UUID(ID), "r", 9, 4, "bob", "🎉", True),
        ),
        (
            ReadPosition("read", "r", "bob", 12),
            ReadPosition("read", "r", "bob", 12),
        ),
    ],
    ids=lambda x: type(x).__name__,
)
def test_an_event_value_decodes_to_its_view(event: msgspec.Struct, view: msgspec.Struct) -> None:
    value = msgspec.json.encode(event)
    assert not records.is_message(value)
    assert records.decode_event(value) == view


@pytest.mark.parametrize(
    ("wire", "view"),
    [
        (Message, records.MessageRecord),
        (MessageUpdated, records.UpdatedRecord),
        (MessageDeleted, records.DeletedRecord),
        (Reaction, records.ReactionRecord),
    ],
)
def test_each_view_has_its_wire_types_fields_in_order(
    wire: type[msgspec.Struct], view: type[msgspec.Struct]
) -> None:
    assert view.__struct_fields__ == wire.__struct_fields__


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b'{"type":"poke","room":"r"}', "unknown event type 'poke'"),
        (b'{"type":"reaction","id":"not-a-uuid"}', "Invalid UUID"),
        (b'{"type":', "truncated"),
    ],
)
def test_an_undecodable_event_says_why(value: bytes, problem: str) -> None:
    with pytest.raises(records.RecordError, match=problem):
        records.decode_event(value)


def test_an_undecodable_message_says_why() -> None:
    with pytest.raises(records.RecordError, match="Object missing required field"):
        records.decode_message(b"{}")
