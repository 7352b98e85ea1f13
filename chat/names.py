"""Names of streams, topics, keys and channels, shared by every process."""

from __future__ import annotations

import zlib

# Gateways XADD accepted sends here, partitioned by room (``partition``); the message function
# consumes each partition with one consumer at a time.
INBOUND_STREAM = "chat:inbound"
INBOUND_DEAD_LETTER = "chat:inbound:dead"
# The message function produces every sequenced message here, keyed by room.
MESSAGES_TOPIC = "chat.messages"
MESSAGES_DEAD_LETTER = "chat.messages.dead"


def _room_tag(room: str) -> str:
    # The hash tag keeps all of a room's keys in one Redis Cluster slot, so the
    # sequencing script can touch them atomically.
    return f"chat:room:{{{room}}}"


def seq_key(room: str) -> str:
    """Counter holding the room's last assigned seq."""
    return f"{_room_tag(room)}:seq"


def recent_log_key(room: str) -> str:
    """Capped stream of the room's recent messages, entry id ``<seq>-0``."""
    return f"{_room_tag(room)}:log"


def dedup_key(room: str, message_id: str) -> str:
    """Remembers that a message id already has a seq."""
    return f"{_room_tag(room)}:dedup:{message_id}"


def message_state_key(room: str) -> str:
    """Hash of the room's messages: id -> ``<seq>|<version>|<deleted 0/1>|<sender>``."""
    return f"{_room_tag(room)}:msgs"


def live_key(room: str) -> str:
    """Sorted set of the seqs of the room's messages that are not deleted (unread counts)."""
    return f"{_room_tag(room)}:live"


def own_key(room: str, user: str) -> str:
    """Sorted set of the seqs of ``user``'s messages in the room that are not deleted."""
    return f"{_room_tag(room)}:own:{user}"


def reactions_key(room: str, message_id: str) -> str:
    """Hash of a message's reactions: emoji -> how many users put it."""
    return f"{_room_tag(room)}:rx:{message_id}"


def reactors_key(room: str, message_id: str) -> str:
    """Set of a message's ``<emoji>\\n<user>`` pairs (one user counts once per emoji)."""
    return f"{_room_tag(room)}:rxu:{message_id}"


def reads_key(room: str) -> str:
    """Hash of the room's read positions: user -> last_read_seq."""
    return f"{_room_tag(room)}:reads"


def room_channel(room: str) -> str:
    """Sharded pub/sub channel of the room's fan-out frames; in the room's slot like its keys."""
    return f"{_room_tag(room)}:events"


def sio_room(room: str) -> str:
    """Socket.IO room of a chat room; prefixed so it can never name a socket id."""
    return f"r:{room}"


def presence_key(room: str) -> str:
    """Sorted set of the room's present sockets across nodes, scored by last heartbeat (ms)."""
    return f"{_room_tag(room)}:presence"


def rate_limit_key(user: str, bucket: str) -> str:
    """A user's rate-limit bucket; one hash tag per user so a check spans its buckets atomically."""
    return f"chat:rl:{{u:{user}}}:{bucket}"


def partition_of(room: str, partitions: int) -> int:
    """The inbound partition of a room: stable across processes and restarts (CRC-32)."""
    return zlib.crc32(room.encode()) % partitions


def partition(base: str, index: int) -> str:
    """Partition ``index`` of the partitioned stream ``base``; its own hash tag (slot)."""
    return f"{base}:{{{base}#{index}}}"


def partition_key(base: str, index: int, suffix: str) -> str:
    """A key in the slot of partition ``index`` of ``base`` (its dead letters, its lease)."""
    return f"{suffix}:{{{base}#{index}}}"


def partition_members(base: str) -> str:
    """Sorted set of the consumers sharing ``base``'s partitions, scored by lease expiry (ms)."""
    return f"{base}:members"
