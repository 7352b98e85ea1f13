"""Read positions and unread counts, held in the room's Redis slot beside its seq.

A member's ``last_read_seq`` only moves forward and never past the room's last seq; the
unread count is exact: the room's messages after it that are neither deleted nor the member's
own, counted in the live and own sets the sequencing script keeps (two ZCOUNTs, whatever the
number of unread messages).
"""

from __future__ import annotations

from dataclasses import dataclass

from chat import names
from chat.lua import Signature
from chat.shards import Shards

# Returns {last seq, last_read_seq, unread, 1 when the user had no read position yet}.
JOIN_STATE = Signature(keys=("seq_key", "reads", "live", "own"), args=("user",))
_JOIN_STATE = JOIN_STATE.script("""
local last = redis.call('GET', seq_key) or '0'
local first = redis.call('HSETNX', reads, user, '0')
local read = redis.call('HGET', reads, user)
local after = '(' .. read
local unread = redis.call('ZCOUNT', live, after, '+inf') - redis.call('ZCOUNT', own, after, '+inf')
return {last, read, unread, first}
""")
# Returns {last_read_seq now, the position asked for once clamped to the room's last seq}.
MOVE = Signature(keys=("reads", "seq_key"), args=("user", "seq"))
_MOVE = MOVE.script("""
local current = redis.call('HGET', reads, user) or '0'
local last = redis.call('GET', seq_key) or '0'
local asked = seq
if #asked > #last or (#asked == #last and asked > last) then asked = last end
if #asked > #current or (#asked == #current and asked > current) then
  redis.call('HSET', reads, user, asked)
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
    keys, args = JOIN_STATE.order(
        keys={
            "seq_key": names.seq_key(room),
            "reads": names.reads_key(room),
            "live": names.live_key(room),
            "own": names.own_key(room, user),
        },
        args={"user": user},
    )
    ((last, read, unread, first),) = await shards.run([_JOIN_STATE.call(keys, args)])
    return JoinState(int(last), int(read), max(0, int(unread)), bool(int(first)))


async def move(shards: Shards, room: str, user: str, seq: int) -> tuple[int, bool]:
    """Move the user's read position forward to ``seq`` (clamped to the room's last seq).

    Returns the position now and whether it is the one asked for (then it is worth
    persisting, also when a retry finds it already moved).
    """
    keys, args = MOVE.order(
        keys={"reads": names.reads_key(room), "seq_key": names.seq_key(room)},
        # Decimal strings compared by length then text: exact for any bigint, unlike Lua numbers.
        args={"user": user, "seq": str(seq)},
    )
    ((current, asked),) = await shards.run([_MOVE.call(keys, args)])
    return int(current), int(current) == int(asked)
