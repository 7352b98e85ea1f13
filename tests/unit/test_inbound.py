"""The inbound entry: the fields a gateway appends are the fields the message function reads."""

from __future__ import annotations

import pytest

from chat import inbound
from chat.contract import (
    ContractError,
    DeleteRequest,
    EditRequest,
    ErrorCode,
    ReactRequest,
    ReadPosition,
    SendRequest,
)

TS = "2026-12-01T10:00:00.123Z"
ID = "0b6e2f1c-5a3d-5e7f-8a9b-0c1d2e3f4a5b"


def test_the_entries_fields_are_pinned() -> None:
    send = SendRequest("lobby", "hi", "c-1", reply_to=ID)
    assert list(inbound.send_entry(send, "ann", TS).items()) == [
        ("room", "lobby"),
        ("text", "hi"),
        ("client_msg_id", "c-1"),
        ("sender", "ann"),
        ("ts", TS),
        ("reply_to", ID),
    ]
    assert "reply_to" not in inbound.send_entry(SendRequest("lobby", "hi", "c-1"), "ann", TS)
    react = ReactRequest("lobby", ID, "🎉", False, "op-1")
    assert inbound.op_entry(react, "bob", TS) == {
        "room": "lobby",
        "id": ID,
        "client_op_id": "op-1",
        "sender": "bob",
        "ts": TS,
        "kind": "react",
        "emoji": "🎉",
        "on": "0",
    }
    edit = inbound.op_entry(EditRequest("lobby", ID, "new", "op-2"), "ann", TS)
    assert (edit["kind"], edit["text"]) == ("edit", "new")
    assert inbound.op_entry(DeleteRequest("lobby", ID, "op-3"), "ann", TS)["kind"] == "delete"
    assert inbound.read_entry("lobby", "ann", 7) == {
        "kind": "read",
        "room": "lobby",
        "sender": "ann",
        "seq": "7",
    }


@pytest.mark.parametrize(
    "request_",
    [
        SendRequest("lobby", "hi", "c-1"),
        SendRequest("lobby", "a reply", "c-2", reply_to=ID),
        EditRequest("lobby", ID, "new text", "op-1"),
        DeleteRequest("lobby", ID, "op-2"),
        ReactRequest("lobby", ID, "👍🏽", True, "op-3"),
        ReactRequest("lobby", ID, "👍🏽", False, "op-4"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_an_entry_decodes_to_the_request_it_was_written_from(
    request_: SendRequest | EditRequest | DeleteRequest | ReactRequest,
) -> None:
    if isinstance(request_, SendRequest):
        fields = inbound.send_entry(request_, "ann", TS)
    else:
        fields = inbound.op_entry(request_, "ann", TS)
    assert inbound.decode_op(fields) == request_
    assert inbound.sender_and_ts(fields) == ("ann", TS)
    assert inbound.room_of(fields) == "lobby"
    assert not inbound.is_read(fields)


def test_a_read_entry_decodes_to_its_read_position() -> None:
    fields = inbound.read_entry("lobby", "ann", 41)
    assert inbound.is_read(fields)
    assert inbound.decode_read(fields) == ReadPosition("read", "lobby", "ann", 41)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        (
            {"room": "lobby", "text": "hi", "client_msg_id": "c", "kind": "poke"},
            ErrorCode.INVALID_PAYLOAD,
        ),
        (
            {"room": "lobby", "id": ID, "client_op_id": "o", "emoji": "x", "kind": "react"},
            ErrorCode.INVALID_PAYLOAD,
        ),
        ({"room": "bad room", "text": "hi", "client_msg_id": "c"}, ErrorCode.INVALID_ROOM),
        ({"room": "lobby", "text": "  ", "client_msg_id": "c"}, ErrorCode.INVALID_TEXT),
    ],
)
def test_a_bad_entry_is_refused_with_the_contracts_code(
    fields: dict[str, str], code: ErrorCode
) -> None:
    with pytest.raises(ContractError) as refused:
        inbound.decode_op(fields)
    assert refused.value.code == code


def test_an_entry_without_sender_or_time_is_refused() -> None:
    with pytest.raises(ContractError, match="lacks sender or ts"):
        inbound.sender_and_ts({"room": "lobby", "sender": "ann"})
    with pytest.raises(ContractError, match="lacks sender"):
        inbound.decode_read({"kind": "read", "room": "lobby", "seq": "1"})
    with pytest.raises(ContractError):
        inbound.decode_read({"kind": "read", "room": "lobby", "sender": "a", "seq": "-1"})


def test_an_explicit_message_kind_is_a_send() -> None:
    fields = {"room": "lobby", "text": "hi", "client_msg_id": "c", "kind": "message"}
    assert inbound.decode_op(fields) == SendRequest("lobby", "hi", "c")
