"""The validation floor of CONTRACT.md: every bad input maps to a stable error code."""

from __future__ import annotations

from typing import Any

import pytest

from chat.contract import (
    ContractError,
    ErrorCode,
    JoinRequest,
    SendRequest,
    TypingRequest,
    parse,
    utc_now_iso,
)
from chat.ids import message_id


def _send(**over: Any) -> dict[str, Any]:
    return {"room": "general", "text": "hello", "client_msg_id": "c-1", **over}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (None, ErrorCode.INVALID_PAYLOAD),
        ("text", ErrorCode.INVALID_PAYLOAD),
        ([1, 2], ErrorCode.INVALID_PAYLOAD),
        ({}, ErrorCode.INVALID_PAYLOAD),
        (_send(room="has space"), ErrorCode.INVALID_ROOM),
        (_send(room="x" * 65), ErrorCode.INVALID_ROOM),
        (_send(room=""), ErrorCode.INVALID_ROOM),
        (_send(room=7), ErrorCode.INVALID_ROOM),
        (_send(text="   "), ErrorCode.INVALID_TEXT),
        (_send(text="x" * 4001), ErrorCode.TEXT_TOO_LONG),
        (_send(text="bad\x00byte"), ErrorCode.INVALID_TEXT),
        (_send(text=42), ErrorCode.INVALID_PAYLOAD),
        (_send(client_msg_id=""), ErrorCode.INVALID_CLIENT_MSG_ID),
        (_send(client_msg_id="x" * 65), ErrorCode.INVALID_CLIENT_MSG_ID),
        (_send(client_msg_id="tab\there"), ErrorCode.INVALID_CLIENT_MSG_ID),
        (_send(client_msg_id=12), ErrorCode.INVALID_PAYLOAD),
    ],
)
def test_bad_sends_get_a_stable_code(payload: Any, code: ErrorCode) -> None:
    with pytest.raises(ContractError) as caught:
        parse(SendRequest, payload)
    ack = caught.value.ack()
    assert ack["ok"] is False
    assert ack["error"]["code"] == code
    assert ack["error"]["message"]


def test_a_good_send_is_trimmed_and_kept_at_the_limits() -> None:
    request = parse(SendRequest, _send(text="  " + "y" * 4000 + "\n", client_msg_id="x" * 64))
    assert request.text == "y" * 4000
    assert parse(SendRequest, _send(room="a.b:c_d-9")).room == "a.b:c_d-9"


def test_join_accepts_since_seq_and_refuses_negative_or_non_integer() -> None:
    assert parse(JoinRequest, {"room": "r", "since_seq": 5}).since_seq == 5
    assert parse(JoinRequest, {"room": "r"}).since_seq is None
    for bad in (-1, "5", 1.5, True):
        with pytest.raises(ContractError):
            parse(JoinRequest, {"room": "r", "since_seq": bad})


def test_typing_needs_a_boolean() -> None:
    assert parse(TypingRequest, {"room": "r", "typing": True}).typing is True
    with pytest.raises(ContractError):
        parse(TypingRequest, {"room": "r", "typing": "yes"})


def test_message_ids_are_stable_per_send_and_distinct_across_parts() -> None:
    assert message_id("ann", "r", "1") == message_id("ann", "r", "1")
    # Without length prefixes these two would collide.
    assert message_id("a|1:b", "r", "c") != message_id("a", "1:b|r", "c")
    assert message_id("ann", "r", "1") != message_id("bob", "r", "1")


def test_timestamps_are_iso_utc_with_a_z() -> None:
    ts = utc_now_iso()
    assert ts.endswith("Z") and "T" in ts and len(ts) == len("2026-01-01T00:00:00.000Z")
