"""The v2 ops' field rules: each bad field maps to its stable code, as at every other edge."""

from __future__ import annotations

from typing import Any

import pytest

from chat import inbound
from chat.contract import (
    ContractError,
    DeleteRequest,
    EditRequest,
    ErrorCode,
    ReactRequest,
    ReadRequest,
    SendRequest,
    parse,
)
from chat.ids import message_id, op_id

ID = message_id("ann", "general", "c-1")


def _op(**over: Any) -> dict[str, Any]:
    return {"room": "general", "id": ID, "client_op_id": "o-1", **over}


@pytest.mark.parametrize(
    ("kind", "payload", "code"),
    [
        (EditRequest, _op(text="  "), ErrorCode.INVALID_TEXT),
        (EditRequest, _op(text="x" * 4001), ErrorCode.TEXT_TOO_LONG),
        (EditRequest, _op(text="ok", client_op_id="a" * 65), ErrorCode.INVALID_CLIENT_OP_ID),
        (EditRequest, _op(text="ok", client_op_id="\u200b"), ErrorCode.INVALID_CLIENT_OP_ID),
        (EditRequest, _op(text="ok", id=ID.upper()), ErrorCode.NOT_FOUND),
        (DeleteRequest, _op(id="x" * 10_000), ErrorCode.NOT_FOUND),
        (DeleteRequest, _op(id=["a"]), ErrorCode.INVALID_PAYLOAD),
        (DeleteRequest, _op(room="bad room"), ErrorCode.INVALID_ROOM),
        (ReactRequest, _op(emoji="👍" * 33, on=True), ErrorCode.INVALID_EMOJI),
        (ReactRequest, _op(emoji="a\tb", on=True), ErrorCode.INVALID_EMOJI),
        (ReactRequest, _op(emoji="\u2028", on=True), ErrorCode.INVALID_EMOJI),
        (ReactRequest, _op(emoji="\ud800", on=True), ErrorCode.INVALID_EMOJI),
        (ReactRequest, _op(emoji="👍", on=1), ErrorCode.INVALID_PAYLOAD),
        (ReadRequest, {"room": "general", "seq": -1}, ErrorCode.INVALID_PAYLOAD),
        (ReadRequest, {"room": "general", "seq": 2**63}, ErrorCode.INVALID_PAYLOAD),
        (ReadRequest, {"room": "general", "seq": "3"}, ErrorCode.INVALID_PAYLOAD),
        (
            SendRequest,
            {"room": "general", "text": "re", "client_msg_id": "c", "reply_to": "nope"},
            ErrorCode.NOT_FOUND,
        ),
    ],
)
def test_a_bad_op_field_has_its_code(kind: type, payload: dict[str, Any], code: ErrorCode) -> None:
    with pytest.raises(ContractError) as caught:
        parse(kind, payload)
    assert caught.value.code == code
    assert caught.value.message


def test_good_ops_parse_and_become_inbound_entries() -> None:
    edit = parse(EditRequest, _op(text="  new text "))
    assert edit.text == "new text"
    react = parse(ReactRequest, _op(emoji="👍🏽", on=False))
    assert inbound.op_entry(react, "bob", "t")["on"] == "0"
    assert inbound.op_entry(edit, "bob", "t")["kind"] == "edit"
    assert parse(ReadRequest, {"room": "general", "seq": 2**63 - 1}).seq == 2**63 - 1


def test_op_ids_are_stable_and_never_a_message_id() -> None:
    assert op_id("ann", "general", "c-1") == op_id("ann", "general", "c-1")
    assert op_id("ann", "general", "c-1") != op_id("bob", "general", "c-1")
    assert op_id("ann", "general", "c-1") != message_id("ann", "general", "c-1")
