"""Wire contract v1: inbound event payloads, outbound messages, acks and error codes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import msgspec

ROOM_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
ROOM_RE = re.compile(ROOM_PATTERN)
# Control characters other than tab and newlines: NUL cannot even be stored in PostgreSQL text.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_TEXT_CHARS = 4000
MAX_CLIENT_MSG_ID_CHARS = 64

Room = Annotated[str, msgspec.Meta(pattern=ROOM_PATTERN)]
# Bounded by Redis stream ids and PostgreSQL bigint: a larger one is bad input, not a server error.
MAX_SEQ = 2**63 - 1
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
T = TypeVar("T")


class ErrorCode(StrEnum):
    """Stable error codes carried by error acks and HTTP error bodies."""

    INVALID_PAYLOAD = "invalid_payload"
    INVALID_ROOM = "invalid_room"
    INVALID_TEXT = "invalid_text"
    TEXT_TOO_LONG = "text_too_long"
    INVALID_CLIENT_MSG_ID = "invalid_client_msg_id"
    NOT_MEMBER = "not_member"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ROOMS = "too_many_rooms"
    INVALID_PARAMETER = "invalid_parameter"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ContractError(Exception):
    """Bad input, reported to the client as an error ack; never a crash."""

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def ack(self) -> dict[str, Any]:
        """The error ack for this error."""
        return error_ack(self.code, self.message, **self.extra)


def ok_ack(**fields: Any) -> dict[str, Any]:
    """A success ack."""
    return {"ok": True, **fields}


def error_ack(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    """An error ack; ``extra`` (such as ``retry_after_ms``) sits beside ``ok``."""
    return {"ok": False, "error": {"code": str(code), "message": message}, **extra}


class JoinRequest(msgspec.Struct, forbid_unknown_fields=False):
    room: Room
    since_seq: Seq | None = None


class LeaveRequest(msgspec.Struct):
    room: Room


class SendRequest(msgspec.Struct):
    room: Room
    text: str
    client_msg_id: str

    def __post_init__(self) -> None:
        trimmed = self.text.strip()
        if not trimmed:
            raise ContractError(ErrorCode.INVALID_TEXT, "text is empty")
        if len(trimmed) > MAX_TEXT_CHARS:
            raise ContractError(
                ErrorCode.TEXT_TOO_LONG, f"text is longer than {MAX_TEXT_CHARS} characters"
            )
        if _CONTROL_RE.search(trimmed):
            raise ContractError(ErrorCode.INVALID_TEXT, "text holds control characters")
        self.text = trimmed
        cid = self.client_msg_id
        if not 1 <= len(cid) <= MAX_CLIENT_MSG_ID_CHARS or not cid.isprintable():
            raise ContractError(
                ErrorCode.INVALID_CLIENT_MSG_ID,
                f"client_msg_id must be 1..{MAX_CLIENT_MSG_ID_CHARS} printable characters",
            )


class TypingRequest(msgspec.Struct):
    room: Room
    typing: bool


class Message(msgspec.Struct, frozen=True):
    """A sequenced chat message, as clients, Kafka and the database see it."""

    id: str
    room: str
    seq: int
    sender: str
    text: str
    client_msg_id: str
    ts: str


def parse(kind: type[T], payload: Any) -> T:
    """Validate an event payload into ``kind`` or raise ContractError with a stable code."""
    if not isinstance(payload, dict):
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "payload must be a JSON object")
    try:
        return msgspec.convert(payload, kind, strict=True)
    except ContractError:
        raise
    except msgspec.ValidationError as exc:
        detail = str(exc)
        if "$.room" in detail:
            raise ContractError(ErrorCode.INVALID_ROOM, "room must match " + ROOM_PATTERN) from None
        raise ContractError(ErrorCode.INVALID_PAYLOAD, detail) from None


def inbound_fields(request: SendRequest, sender: str, ts: str) -> dict[str, str]:
    """The inbound stream entry a gateway adds for an accepted send."""
    return {
        "room": request.room,
        "text": request.text,
        "client_msg_id": request.client_msg_id,
        "sender": sender,
        "ts": ts,
    }


def utc_now_iso() -> str:
    """The current time as ISO-8601 UTC with milliseconds and a Z suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
