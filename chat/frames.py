"""The live path's formats, each with one owner: writers and readers (Lua included) call these.

- The **message JSON** is encoded once, by the message function, with its ``seq`` left out: the
  sequencing script splices the seq it assigns between a head and a tail (``MESSAGE_LUA``), so
  Python owns the shape and Lua only inserts a number. The same bytes go to the recent log, the
  fan-out frame and Kafka.
- The **Socket.IO packet** is what a Socket.IO v4 client receives inside an Engine.IO message:
  ``2["<event>",<data>]`` (EVENT, namespace ``/``, no ack id).
- The **fan-out frame** is what a room's sharded pub/sub channel carries:
  ``1|<event>|<seq>|<skip sid>|<packet>``; a gateway node writes ``<packet>`` to each local member
  as it is, without decoding it.
- The **recent-log entry** is ``<seq>-0 m <event JSON>`` in the room's capped stream, plus
  ``e <event>`` for room events other than ``message`` (an entry without ``e`` is a message).
  The sequencing script appends it (``log_append`` in ``MESSAGE_LUA``); the gateway's replay and
  repair and the history function read it with the ``log_entry_*`` functions and range bounds here.
- An **event JSON** (``message_updated``, ``message_deleted``, ``reaction``) is encoded by the
  message function with its numbers left out, like a message's: the script splices the seq, the
  message's seq and (edits) the version it assigns (``event_template``).
- The **op frame** is a node-only control frame on the room's channel, ``1|_op|||<op JSON>``
  with ``{"op": <op id>, "code": "ok" | <error code>, "version": <int>}``: the outcome of an
  edit, delete, react or reply, which the gateway waiting for it turns into the ack. Gateways
  never deliver it to clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import msgspec

from chat.contract import Message, MessageDeleted, MessageUpdated, Reaction

FRAME_VERSION = "1"
LOG_FIELD = "m"
LOG_EVENT_FIELD = "e"
OP_EVENT = "_op"
# The seq sits third in a message's JSON: after id and room, which can hold no quote.
_SEQ_SLOT = b',"seq":0,'

_encode = msgspec.json.Encoder().encode
_decode_message = msgspec.json.Decoder(Message).decode
# An event's numbers, as its template leaves them: seq and msg_seq, and an edit's version.
_NUMBERS_SLOT = b',"seq":0,"msg_seq":0,'
# A message's ``ts`` follows its text (where any quote is escaped): found from the end, without
# parsing the packet.
_TS_MARK = '"ts":"'
_VERSION_SLOT = b'"version":0,'


class FrameError(ValueError):
    """A fan-out frame or log entry that is not in this module's format."""


# Lua functions the sequencing script is built with; Python mirrors each one below, and the
# codec tests run both on the same input and compare the bytes.
# Lua numbers are doubles and `..` prints them with 14 digits: seqs are formatted as integers.
MESSAGE_LUA = f"""
local function seq_text(seq)
  return string.format('%d', seq)
end
local function message_json(head, seq, tail)
  return head .. seq_text(seq) .. tail
end
local function event_packet(event, data)
  return '2["' .. event .. '",' .. data .. ']'
end
local function fanout_frame(event, seq, packet)
  return '{FRAME_VERSION}|' .. event .. '|' .. seq_text(seq) .. '||' .. packet
end
local function event_json(head, seq, msg_seq, version, tail)
  local numbers = seq_text(seq) .. ',"msg_seq":' .. seq_text(msg_seq)
  if version then
    numbers = numbers .. ',"version":' .. seq_text(version)
  end
  return head .. numbers .. tail
end
local function log_entry_id(seq)
  return seq_text(seq) .. '-0'
end
local function log_append(key, log_len, seq, event, json)
  if event == 'message' then
    redis.call('XADD', key, 'MAXLEN', '~', log_len, log_entry_id(seq), '{LOG_FIELD}', json)
  else
    redis.call('XADD', key, 'MAXLEN', '~', log_len, log_entry_id(seq), '{LOG_FIELD}', json,
      '{LOG_EVENT_FIELD}', event)
  end
end
local function op_frame(op, code, version)
  return '{FRAME_VERSION}|{OP_EVENT}|||{{"op":"' .. op .. '","code":"' .. code
    .. '","version":' .. seq_text(version) .. '}}'
end
"""


def message_template(message: Message) -> tuple[bytes, bytes]:
    """Split ``message``'s JSON around its seq: ``head + str(seq) + tail`` is the whole JSON."""
    raw = _encode(msgspec.structs.replace(message, seq=0))
    head, slot, tail = raw.partition(_SEQ_SLOT)
    if not slot:
        raise FrameError("a message's JSON must hold its seq third")
    return head + b',"seq":', b"," + tail


def message_json(head: bytes, seq: int, tail: bytes) -> bytes:
    """The message JSON with its seq (what ``message_json`` in ``MESSAGE_LUA`` builds)."""
    return head + str(seq).encode() + tail


RoomEvent = MessageUpdated | MessageDeleted | Reaction


def event_template(event: RoomEvent) -> tuple[bytes, bytes]:
    """Split an event's JSON around its numbers (seq, msg_seq and an edit's version)."""
    raw = _encode(msgspec.structs.replace(event, seq=0, msg_seq=0, **_version_zero(event)))
    head, slot, tail = raw.partition(_NUMBERS_SLOT)
    if not slot:
        raise FrameError("an event's JSON must hold seq and msg_seq after its id and room")
    if isinstance(event, MessageUpdated):
        if not tail.startswith(_VERSION_SLOT):
            raise FrameError("an edit's JSON must hold its version after msg_seq")
        tail = tail[len(_VERSION_SLOT) :]
    return head + b',"seq":', b"," + tail


def _version_zero(event: RoomEvent) -> dict[str, int]:
    return {"version": 0} if isinstance(event, MessageUpdated) else {}


def event_json(head: bytes, seq: int, msg_seq: int, version: int | None, tail: bytes) -> bytes:
    """An event's JSON with its numbers (what ``event_json`` in ``MESSAGE_LUA`` builds)."""
    numbers = f'{seq},"msg_seq":{msg_seq}'
    if version is not None:
        numbers += f',"version":{version}'
    return head + numbers.encode() + tail


def encode_room_event(event: RoomEvent) -> bytes:
    """An event's JSON, as clients, the recent log and Kafka carry it."""
    return _encode(event)


def encode_op_frame(op: str, code: str, version: int = 0) -> str:
    """The op frame telling the gateways the outcome of the op ``op``."""
    body = f'{{"op":"{op}","code":"{code}","version":{version}}}'
    return f"{FRAME_VERSION}|{OP_EVENT}|||{body}"


class OpOutcome(msgspec.Struct, frozen=True):
    """What an op frame carries: the op's id, ``ok`` or an error code, an edit's version."""

    op: str
    code: str
    version: int = 0


_decode_outcome = msgspec.json.Decoder(OpOutcome).decode


def decode_op(packet: str) -> OpOutcome:
    """The outcome an op frame's packet carries; raises FrameError when it is not one."""
    try:
        return _decode_outcome(packet)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError(f"not an op outcome: {exc}") from None


def encode_message(message: Message) -> bytes:
    """A message's JSON, as clients, the recent log and Kafka carry it."""
    return _encode(message)


def decode_message(raw: bytes | str) -> Message:
    """A message from its JSON; raises FrameError when it is not one."""
    try:
        return _decode_message(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError(f"not a message: {exc}") from None


def accepted_at(packet: str) -> float | None:
    """The epoch time a message packet's send was accepted (its ``ts``), None when unreadable."""
    at = packet.rfind(_TS_MARK)
    if at < 0:
        return None
    start = at + len(_TS_MARK)
    end = packet.find('"', start)
    try:
        return datetime.fromisoformat(packet[start:end]).timestamp()
    except ValueError:
        return None


def event_packet(event: str, data: bytes | str) -> str:
    """The Socket.IO EVENT packet for namespace ``/`` carrying one JSON argument."""
    body = data.decode() if isinstance(data, bytes) else data
    return f"2[{_encode(event).decode()},{body}]"


def encode_event(event: str, payload: object) -> str:
    """The Socket.IO EVENT packet of ``payload``, JSON-encoded once."""
    return event_packet(event, _encode(payload))


@dataclass(frozen=True, slots=True)
class Frame:
    """One fan-out frame: the event, its room seq (messages only), a socket to skip, the packet."""

    event: str
    seq: int | None
    skip: str | None
    packet: str


def encode_frame(event: str, packet: str, seq: int | None = None, skip: str | None = None) -> str:
    """The frame published on a room's channel."""
    if "|" in event or (skip is not None and "|" in skip):
        raise FrameError("event names and socket ids in a frame cannot hold '|'")
    return f"{FRAME_VERSION}|{event}|{'' if seq is None else seq}|{skip or ''}|{packet}"


def decode_frame(raw: bytes | str) -> Frame:
    """Split a frame without touching its packet; raises FrameError when it is not one."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    parts = text.split("|", 4)
    if len(parts) != 5 or parts[0] != FRAME_VERSION:
        raise FrameError(f"not a version-{FRAME_VERSION} fan-out frame: {text[:40]!r}")
    _version, event, seq, skip, packet = parts
    if not event or not packet:
        raise FrameError("a fan-out frame needs an event and a packet")
    try:
        number = int(seq) if seq else None
    except ValueError:
        raise FrameError(f"a fan-out frame's seq must be a number, got {seq[:20]!r}") from None
    return Frame(event=event, seq=number, skip=skip or None, packet=packet)


def log_entry_id(seq: int) -> str:
    """The recent-log stream id of the event with ``seq`` (what ``log_entry_id`` in Lua gives)."""
    return f"{seq}-0"


def log_excluding(seq: int) -> str:
    """A recent-log range bound that leaves the entry of ``seq`` out (``(<seq>-0``)."""
    return f"({seq}-0"


def log_entry_seq(entry_id: str) -> int:
    """The seq of a recent-log entry, from its stream id."""
    head, _, _ = entry_id.partition("-")
    try:
        return int(head)
    except ValueError:
        raise FrameError(f"not a recent-log entry id: {entry_id[:40]!r}") from None


def log_entry_event(fields: Mapping[str, str]) -> str:
    """The event name of a recent-log entry (``message`` when it names none)."""
    return fields.get(LOG_EVENT_FIELD) or "message"


def log_entry_frame(entry_id: str, fields: Mapping[str, str]) -> Frame:
    """A recent-log entry as the fan-out frame of its event (what a replay or repair sends)."""
    event = log_entry_event(fields)
    packet = event_packet(event, log_entry_json(fields))
    return Frame(event=event, seq=log_entry_seq(entry_id), skip=None, packet=packet)


def log_entry_json(fields: Mapping[str, str]) -> str:
    """The event JSON of a recent-log entry."""
    try:
        return fields[LOG_FIELD]
    except KeyError:
        raise FrameError(f"a recent-log entry lacks its {LOG_FIELD!r} field") from None
