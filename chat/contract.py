"""Wire contract v2: inbound event payloads, outbound room events, acks and error codes.

Each field has one validator here, exactly as strict as storage: whatever it accepts, Redis,
Kafka and PostgreSQL accept too (tests/integration/test_stores_accept.py shows it), and whatever it
refuses raises ``ContractError`` with a stable code. Text is never normalised (no NFC/NFKC):
it is stored as the client sent it, less surrounding whitespace, so a re-send of the same text
deduplicates byte for byte; only values that are not Unicode scalar values (lone surrogates) or
that storage cannot hold (NUL, other control characters) are refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import msgspec

# \A and \Z anchor the whole string in Python and in PostgreSQL alike; `$` would let Python
# accept "room\n" that PostgreSQL's CHECK (migration 0007 carries this same text) refuses.
ROOM_PATTERN = r"\A[A-Za-z0-9_.:-]{1,64}\Z"
ROOM_RE = re.compile(ROOM_PATTERN)
ROOM_RULE = "room must be 1..64 characters of A-Z, a-z, 0-9, _ . : -"
# Control characters other than tab and newlines (NUL cannot even be stored in PostgreSQL text),
# and the surrogate code points: alone they are no Unicode scalar value and have no UTF-8 form,
# so Redis, Kafka and PostgreSQL clients could not encode them.
_UNSTORABLE_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
MAX_TEXT_CHARS = 4000
MAX_CLIENT_MSG_ID_CHARS = 64
MAX_USER_ID_CHARS = 128
MAX_EMOJI_CHARS = 32
# Room events besides ``message`` carry their type in their JSON (first, so a reader can tell
# the kind from the first bytes); a message's JSON has none (v1's shape).
MESSAGE_UPDATED = "message_updated"
MESSAGE_DELETED = "message_deleted"
REACTION = "reaction"
READ = "read"

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
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    SLOW_CONSUMER = "slow_consumer"
    TOO_MANY_SOCKETS = "too_many_sockets"
    INVALID_PARAMETER = "invalid_parameter"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_FOUND = "not_found"
    INVALID_EMOJI = "invalid_emoji"
    INVALID_CLIENT_OP_ID = "invalid_client_op_id"
    TOO_MANY_EMOJIS = "too_many_emojis"
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


def check_room(value: object) -> str:
    """``value`` if it is a valid room name, else ``invalid_room``."""
    if not isinstance(value, str) or ROOM_RE.fullmatch(value) is None:
        raise ContractError(ErrorCode.INVALID_ROOM, ROOM_RULE)
    return value


def check_text(value: object) -> str:
    """Message text trimmed of surrounding whitespace, else ``invalid_text``/``text_too_long``."""
    if not isinstance(value, str):
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "text must be a string")
    trimmed = value.strip()
    if not trimmed:
        raise ContractError(ErrorCode.INVALID_TEXT, "text is empty")
    if len(trimmed) > MAX_TEXT_CHARS:
        raise ContractError(
            ErrorCode.TEXT_TOO_LONG, f"text is longer than {MAX_TEXT_CHARS} characters"
        )
    if _UNSTORABLE_RE.search(trimmed):
        raise ContractError(
            ErrorCode.INVALID_TEXT,
            "text holds control characters or lone surrogates: send valid Unicode text",
        )
    return trimmed


def _printable(value: object, limit: int) -> bool:
    # isprintable() is False for control, format, separator (but ' ') and surrogate code points.
    return isinstance(value, str) and 1 <= len(value) <= limit and value.isprintable()


def _client_id(value: object, name: str, code: ErrorCode) -> str:
    if not _printable(value, MAX_CLIENT_MSG_ID_CHARS):
        raise ContractError(
            code, f"{name} must be 1..{MAX_CLIENT_MSG_ID_CHARS} printable characters"
        )
    assert isinstance(value, str)
    return value


def check_client_msg_id(value: object) -> str:
    """``value`` if it is a valid client_msg_id, else ``invalid_client_msg_id``."""
    return _client_id(value, "client_msg_id", ErrorCode.INVALID_CLIENT_MSG_ID)


def check_client_op_id(value: object) -> str:
    """``value`` if it is a valid client_op_id (client_msg_id's rule), else an error."""
    return _client_id(value, "client_op_id", ErrorCode.INVALID_CLIENT_OP_ID)


_UUID_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def check_message_id(value: object, field: str = "id") -> str:
    """``value`` if it can be a message id (a lowercase UUID, as acks give it).

    Else ``invalid_payload`` (not a string) or ``not_found``: no message has such an id.
    """
    if not isinstance(value, str):
        raise ContractError(ErrorCode.INVALID_PAYLOAD, f"{field} must be a string")
    if _UUID_RE.fullmatch(value) is None:
        raise ContractError(
            ErrorCode.NOT_FOUND, f"{field} names no message: use the id a send's ack returned"
        )
    return value


def check_emoji(value: object) -> str:
    """``value`` if it is 1..32 characters without whitespace, storable, else ``invalid_emoji``."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_EMOJI_CHARS
        or any(c.isspace() for c in value)
        or _UNSTORABLE_RE.search(value)
    ):
        raise ContractError(
            ErrorCode.INVALID_EMOJI,
            f"emoji must be 1..{MAX_EMOJI_CHARS} characters without whitespace",
        )
    return value


def check_user_id(value: object, code: ErrorCode = ErrorCode.UNAUTHORIZED) -> str:
    """``value`` if it is a valid user id (a token's ``sub``), else ``code``."""
    if not _printable(value, MAX_USER_ID_CHARS):
        raise ContractError(code, f"user id must be 1..{MAX_USER_ID_CHARS} printable characters")
    assert isinstance(value, str)
    return value


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
    reply_to: str | None = None

    def __post_init__(self) -> None:
        self.text = check_text(self.text)
        check_client_msg_id(self.client_msg_id)
        if self.reply_to is not None:
            check_message_id(self.reply_to, "reply_to")


class EditRequest(msgspec.Struct):
    room: Room
    id: str
    text: str
    client_op_id: str

    def __post_init__(self) -> None:
        check_message_id(self.id)
        self.text = check_text(self.text)
        check_client_op_id(self.client_op_id)


class DeleteRequest(msgspec.Struct):
    room: Room
    id: str
    client_op_id: str

    def __post_init__(self) -> None:
        check_message_id(self.id)
        check_client_op_id(self.client_op_id)


class ReactRequest(msgspec.Struct):
    room: Room
    id: str
    emoji: str
    on: bool
    client_op_id: str

    def __post_init__(self) -> None:
        check_message_id(self.id)
        check_emoji(self.emoji)
        check_client_op_id(self.client_op_id)


class ReadRequest(msgspec.Struct):
    room: Room
    seq: Seq


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
    reply_to: str | None = None


# The numbers a sequencing script assigns come right after the id and room (which hold no
# quote), so the JSON can be split around them (``chat.frames.event_template``).
class MessageUpdated(msgspec.Struct, frozen=True):
    """An edit: the message ``id`` (at ``msg_seq``) has ``text`` as its ``version``."""

    type: str
    id: str
    room: str
    seq: int
    msg_seq: int
    version: int
    text: str
    edited_at: str
    sender: str


class MessageDeleted(msgspec.Struct, frozen=True):
    """A delete: the message ``id`` (at ``msg_seq``) is a tombstone from now on."""

    type: str
    id: str
    room: str
    seq: int
    msg_seq: int
    deleted_at: str


class Reaction(msgspec.Struct, frozen=True):
    """``user`` put (``on``) or took back an ``emoji`` on the message ``id``."""

    type: str
    id: str
    room: str
    seq: int
    msg_seq: int
    user: str
    emoji: str
    on: bool


class ReadPosition(msgspec.Struct, frozen=True):
    """A member's read position (not a room event: it has no seq of its own)."""

    type: str
    room: str
    user: str
    last_read_seq: int


def parse(kind: type[T], payload: Any) -> T:
    """Validate an event payload into ``kind`` or raise ContractError with a stable code."""
    if not isinstance(payload, dict):
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "payload must be a JSON object")
    try:
        return msgspec.convert(payload, kind, strict=True)
    except ContractError:
        raise
    except UnicodeError:
        # msgspec encodes keys to match them to fields: a lone surrogate in one cannot be.
        raise ContractError(
            ErrorCode.INVALID_PAYLOAD, "payload keys must be valid Unicode text"
        ) from None
    except msgspec.ValidationError as exc:
        detail = str(exc)
        if "$.room" in detail:
            raise ContractError(ErrorCode.INVALID_ROOM, ROOM_RULE) from None
        raise ContractError(ErrorCode.INVALID_PAYLOAD, detail) from None


def iso_ms(ts: datetime) -> str:
    """A time as the wire writes it: ISO-8601 UTC with milliseconds and a Z suffix."""
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    """The current time as the wire writes it (``iso_ms``)."""
    return iso_ms(datetime.now(UTC))
