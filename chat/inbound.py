"""The inbound entry: what a gateway appends to a room's inbound stream partition for the
message function, one Redis stream entry of string fields per accepted op.

- a send: ``room text client_msg_id sender ts [reply_to]`` (no ``kind``, as in v1, or
  ``message``);
- an edit, delete or react: ``room id client_op_id sender ts kind`` with ``kind`` ``edit``
  (and ``text``), ``delete`` or ``react`` (and ``emoji``, ``on`` ``1``/``0``);
- a read position: ``kind room sender seq`` with ``kind`` ``read``.

The gateway writes entries with ``send_entry``, ``op_entry`` and ``read_entry``; the message
function reads them back with ``decode_op`` and ``decode_read``, validating them again with the
wire contract's own rules: the stream is a trust boundary like any other.
"""

from __future__ import annotations

from collections.abc import Mapping

from chat.contract import (
    READ,
    ContractError,
    DeleteRequest,
    EditRequest,
    ErrorCode,
    ReactRequest,
    ReadPosition,
    ReadRequest,
    SendRequest,
    parse,
)

ROOM, SENDER, TS, KIND = "room", "sender", "ts", "kind"
TEXT, CLIENT_MSG_ID, REPLY_TO = "text", "client_msg_id", "reply_to"
ID, CLIENT_OP_ID, EMOJI, ON, SEQ = "id", "client_op_id", "emoji", "on", "seq"
KIND_SEND, KIND_EDIT, KIND_DELETE = "message", "edit", "delete"
KIND_REACT, KIND_READ = "react", "read"

OpRequest = SendRequest | EditRequest | DeleteRequest | ReactRequest
_SEND_FIELDS = (ROOM, TEXT, CLIENT_MSG_ID, REPLY_TO)
_OP_FIELDS = (ROOM, ID, CLIENT_OP_ID)


def send_entry(request: SendRequest, sender: str, ts: str) -> dict[str, str]:
    """The inbound entry of an accepted send."""
    fields = {
        ROOM: request.room,
        TEXT: request.text,
        CLIENT_MSG_ID: request.client_msg_id,
        SENDER: sender,
        TS: ts,
    }
    if request.reply_to is not None:
        fields[REPLY_TO] = request.reply_to
    return fields


def op_entry(
    request: EditRequest | DeleteRequest | ReactRequest, sender: str, ts: str
) -> dict[str, str]:
    """The inbound entry of an accepted edit, delete or react."""
    fields = {
        ROOM: request.room,
        ID: request.id,
        CLIENT_OP_ID: request.client_op_id,
        SENDER: sender,
        TS: ts,
    }
    match request:
        case EditRequest():
            fields.update({KIND: KIND_EDIT, TEXT: request.text})
        case DeleteRequest():
            fields[KIND] = KIND_DELETE
        case ReactRequest():
            fields.update({KIND: KIND_REACT, EMOJI: request.emoji, ON: _flag(request.on)})
    return fields


def read_entry(room: str, user: str, last_read_seq: int) -> dict[str, str]:
    """The inbound entry that persists a read position."""
    return {KIND: KIND_READ, ROOM: room, SENDER: user, SEQ: str(last_read_seq)}


def room_of(fields: Mapping[str, str]) -> str:
    """The room an entry belongs to (which picks its partition)."""
    return fields[ROOM]


def is_read(fields: Mapping[str, str]) -> bool:
    """Whether the entry carries a read position rather than a room op."""
    return fields.get(KIND) == KIND_READ


def sender_and_ts(fields: Mapping[str, str]) -> tuple[str, str]:
    """An op entry's sender and accept time; ``invalid_payload`` when either is missing."""
    sender, ts = fields.get(SENDER), fields.get(TS)
    if not sender or not ts:
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "entry lacks sender or ts")
    return sender, ts


def decode_op(fields: Mapping[str, str]) -> OpRequest:
    """The request an op entry carries, validated; ContractError when it is not one."""
    kind = fields.get(KIND) or KIND_SEND
    if kind == KIND_SEND:
        return parse(SendRequest, _pick(fields, _SEND_FIELDS))
    if kind == KIND_EDIT:
        return parse(EditRequest, _pick(fields, (*_OP_FIELDS, TEXT)))
    if kind == KIND_DELETE:
        return parse(DeleteRequest, _pick(fields, _OP_FIELDS))
    if kind == KIND_REACT:
        on = fields.get(ON)
        if on not in ("0", "1"):
            raise ContractError(ErrorCode.INVALID_PAYLOAD, "a react entry's on must be 0 or 1")
        return parse(ReactRequest, {**_pick(fields, (*_OP_FIELDS, EMOJI)), ON: on == "1"})
    raise ContractError(ErrorCode.INVALID_PAYLOAD, f"unknown entry kind {kind[:20]!r}")


def decode_read(fields: Mapping[str, str]) -> ReadPosition:
    """The read position a read entry carries, validated."""
    request = parse(ReadRequest, {ROOM: fields.get(ROOM), SEQ: _int(fields.get(SEQ))})
    user = fields.get(SENDER)
    if not user:
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "entry lacks sender")
    return ReadPosition(READ, request.room, user, request.seq)


def _flag(on: bool) -> str:
    return "1" if on else "0"


def _pick(fields: Mapping[str, str], keys: tuple[str, ...]) -> dict[str, object]:
    return {k: fields[k] for k in keys if k in fields}


def _int(raw: str | None) -> int | None:
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    return int(raw)
