"""The live path's formats: the message JSON with its spliced seq, packets, frames, log entries."""

from __future__ import annotations

import json

import pytest
from socketio import packet as sio_packet

from chat import frames
from chat.contract import Message, MessageDeleted, MessageUpdated, Reaction


def _message(**over: object) -> Message:
    fields: dict[str, object] = {
        "id": "0b6e2f1c-5a3d-5e7f-8a9b-0c1d2e3f4a5b",
        "room": "lobby",
        "seq": 7,
        "sender": "ann",
        "text": 'hi "there" | 42["x"] \\ ünïcødé 🎉 ,"seq":0,',
        "client_msg_id": "c-1",
        "ts": "2026-12-01T10:00:00.123Z",
    }
    fields.update(over)
    return Message(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("seq", [1, 7, 10**12, 2**63 - 1])
def test_the_spliced_seq_gives_exactly_the_encoded_message(seq: int) -> None:
    # GIVEN a message whose text imitates the seq slot and a packet
    message = _message(seq=seq)
    # WHEN its JSON is split around the seq and joined with it again
    head, tail = frames.message_template(message)
    # THEN the bytes are the message's own encoding, whatever seq the script assigns
    assert frames.message_json(head, seq, tail) == frames.encode_message(message)
    assert frames.decode_message(frames.message_json(head, seq, tail)) == message


def test_the_message_packet_is_what_python_socketio_would_send() -> None:
    message = _message()
    ours = frames.event_packet("message", frames.encode_message(message))
    theirs = sio_packet.Packet(
        sio_packet.EVENT, data=["message", json.loads(frames.encode_message(message))]
    ).encode()
    # Same packet type and namespace, same decoded arguments (they escape non-ASCII, we don't).
    assert ours[0] == theirs[0] == "2"
    assert json.loads(ours[1:]) == json.loads(theirs[1:])


def test_the_message_packet_bytes_are_pinned() -> None:
    ts = "2026-12-01T00:00:00Z"
    message = Message(id="i", room="r", seq=3, sender="s", text="t é", client_msg_id="c", ts=ts)
    assert frames.event_packet("message", frames.encode_message(message)) == (
        '2["message",{"id":"i","room":"r","seq":3,"sender":"s","text":"t é",'
        '"client_msg_id":"c","ts":"2026-12-01T00:00:00Z","reply_to":null}]'
    )
    assert frames.encode_event("typing", {"room": "r", "user": "u", "typing": True}) == (
        '2["typing",{"room":"r","user":"u","typing":true}]'
    )


def test_a_frame_round_trips_and_keeps_its_packet_untouched() -> None:
    packet = '2["message",{"text":"a|b||c"}]'
    raw = frames.encode_frame("message", packet, seq=12)
    assert raw == '1|message|12||2["message",{"text":"a|b||c"}]'
    assert frames.decode_frame(raw) == frames.Frame("message", 12, None, packet)
    assert frames.decode_frame(raw.encode()) == frames.Frame("message", 12, None, packet)
    typing = frames.decode_frame(frames.encode_frame("typing", "2[]", skip="sid-1"))
    assert typing == frames.Frame("typing", None, "sid-1", "2[]")


@pytest.mark.parametrize(
    "raw",
    ["", "garbage", "2|message|1||2[]", "1|message|x||2[]", "1||1||2[]", "1|message|1||", "1|m|1"],
)
def test_a_malformed_frame_is_refused(raw: str) -> None:
    with pytest.raises(frames.FrameError):
        frames.decode_frame(raw)


def test_a_frame_refuses_separators_in_its_header() -> None:
    with pytest.raises(frames.FrameError):
        frames.encode_frame("a|b", "2[]")
    with pytest.raises(frames.FrameError):
        frames.encode_frame("typing", "2[]", skip="x|y")


def test_recent_log_entries_carry_the_seq_in_their_id() -> None:
    assert frames.log_entry_id(41) == "41-0"
    assert frames.log_excluding(41) == "(41-0"
    assert frames.log_entry_seq("41-0") == 41
    assert frames.log_entry_json({"m": "{}"}) == "{}"
    assert frames.log_entry_frame("41-0", {"m": '{"seq":41}'}) == frames.Frame(
        "message", 41, None, '2["message",{"seq":41}]'
    )
    with pytest.raises(frames.FrameError):
        frames.log_entry_seq("x-0")
    with pytest.raises(frames.FrameError):
        frames.log_entry_json({})
    with pytest.raises(frames.FrameError):
        frames.decode_message("{}")


_TEXT = 'x ,"seq":0,"msg_seq":0,"version":0, "} ü 🎉'
_EVENTS = [
    MessageUpdated("message_updated", "i-1", "r", 9, 4, 3, _TEXT, "2026-12-01T00:00:00.000Z", "s"),
    MessageDeleted("message_deleted", "i-1", "r", 9, 4, "2026-12-01T00:00:00.000Z"),
    Reaction("reaction", "i-1", "r", 9, 4, "u", "🎉", True),
]


@pytest.mark.parametrize("event", _EVENTS, ids=lambda e: type(e).__name__)
def test_an_event_template_splices_its_numbers_back_exactly(
    event: MessageUpdated | MessageDeleted | Reaction,
) -> None:
    head, tail = frames.event_template(event)
    version = event.version if isinstance(event, MessageUpdated) else None
    built = frames.event_json(head, event.seq, event.msg_seq, version, tail)
    assert built == frames.encode_room_event(event)
    assert json.loads(built)["type"] == event.type  # the type leads: persist tells kinds apart
    assert built.startswith(b'{"type":')


def test_the_event_bytes_are_pinned() -> None:
    head, tail = frames.event_template(_EVENTS[2])
    assert (
        frames.event_json(head, 12, 5, None, tail)
        == (
            '{"type":"reaction","id":"i-1","room":"r","seq":12,"msg_seq":5,'
            '"user":"u","emoji":"🎉","on":true}'
        ).encode()
    )


def test_an_op_frame_carries_the_outcome_and_is_never_a_seq_frame() -> None:
    raw = frames.encode_op_frame("6d0f6a1e-0000-5000-8000-000000000000", "ok", 3)
    assert raw == '1|_op|||{"op":"6d0f6a1e-0000-5000-8000-000000000000","code":"ok","version":3}'
    frame = frames.decode_frame(raw)
    assert (frame.event, frame.seq, frame.skip) == (frames.OP_EVENT, None, None)
    assert frames.decode_op(frame.packet) == frames.OpOutcome(
        "6d0f6a1e-0000-5000-8000-000000000000", "ok", 3
    )
    with pytest.raises(frames.FrameError):
        frames.decode_op("{}")


def test_a_log_entry_names_its_event_and_a_message_entry_names_none() -> None:
    assert frames.log_entry_frame("8-0", {"m": "{}", "e": "reaction"}) == frames.Frame(
        "reaction", 8, None, '2["reaction",{}]'
    )
    assert frames.log_entry_event({"m": "{}"}) == "message"
