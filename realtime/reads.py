"""Read positions and unread counts, held in the room's Redis slot beside its seq.

A member's ``last_read_seq`` only moves forward and never past the room's last seq; the
unread count is exact: the room's messages after it that are neither deleted nor the member's
own, counted in the live and own sets the sequencing script keeps (two ZCOUNTs, whatever the
number of unread messages).
"""

from __future__ import annotations

from dataclasses import dataclass

from chat import names
from chat.shards import Script, Shards

# KEYS: seq counter, read positions, live set, the user's own set; ARGV: user
# Returns {last seq, last_read_seq, unread, 1 when the user had no read position yet}.
_JOIN_STATE = Script("""
local last = redis.call('GET', KEYS[1]) or '0'
local first = redis.call('HSETNX', KEYS[2], ARGV[1], '0')
local read = redis.call('HGET', KEYS[2], ARGV[1])
local after = '(' .. read
local unread = redis.call('ZCOUNT', KEYS[3], after, '+inf')
  - redis.call('ZCOUNT', KEYS[4], after, '+inf')
return {last, read, unread, first}
""")
# KEYS: read positions, seq counter; ARGV: user, the seq read
# Returns {last_read_seq now, the position asked for once clamped to the room's last seq}.
_MOVE = Script("""
local current = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
local last = redis.call('GET', KEYS[2]) or '0'
local asked = ARGV[2]
if #asked > #last or (#asked == #last and asked > last) then asked = last end
if #asked > #current or (#asked == #current and asked > current) then
  redis.call('HSET', KEYS[1], ARGV[1], asked)
  current = asked
end
return {current, asked}
""")


@dataclass(frozen=True, slots=True)
class JoinState:
    """What a join ack tells about the room and the joining user's read position."""

    last_seq: int
    last_read_seq: int
    unread: int
    # The user had no read position in this room before (a first join: persist membership).
    first: bool


async def join_state(shards: Shards, room: str, user: str) -> JoinState:
    """The room's last seq, the user's read position and unread count, in one call."""
    keys = [
        names.seq_key(room),
        names.reads_key(room),
        names.live_key(room),
        names.own_key(room, user),
    ]
    ((last, read, unread, first),) = await shards.run([_JOIN_STATE.call(keys, [user])])
    return JoinState(int(last), int(read), max(0, int(unread)), bool(int(first)))


async def move(shards: Shards, room: str, user: str, seq: int) -> tuple[int, bool]:
    """Move the user's read position forward to ``seq`` (clamped to the room's last seq).

    Returns the position now and whether it is the one asked for (then it is worth
    persisting, also when a retry finds it already moved).
    """
    keys = [names.reads_key(room), names.seq_key(room)]
    # Decimal strings compared by length then text: exact for any bigint, unlike Lua numbers.
    ((current, asked),) = await shards.run([_MOVE.call(keys, [user, str(seq)])])
    return int(current), int(current) == int(asked)
