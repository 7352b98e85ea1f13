"""Who is in a room across every gateway node, kept alive by heartbeats so crashed nodes fade out.

Each room has a sorted set of its sockets (``node\\tsid\\tuser``) scored by their last heartbeat,
in Redis's clock. Nodes add their sockets on join, remove them on leave and disconnect, and touch
them every heartbeat; whoever runs a script that drops expired members (a crashed node's) or
changes the set of users learns it, so exactly one node announces each change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from chat import names
from chat.lua import Signature
from chat.shards import Command, Shards

Mode = Literal["add", "remove", "touch"]

# The room's presence set; the mode, the ttl in ms, then the members (after the arguments).
# Returns {changed, user count, users..., members missing on touch...}.
# "touch" never re-adds a member (it may have just left); it reports the missing ones instead.
# The distinct users are listed only when something may have changed, so a quiet heartbeat
# costs O(members touched), not O(room size).
UPDATE = Signature(keys=("room_set",), args=("mode", "ttl_ms"))
_UPDATE = UPDATE.script(
    """
local ttl = tonumber(ttl_ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function users()
  local seen, out = {}, {}
  for _, m in ipairs(redis.call('ZRANGE', room_set, 0, -1)) do
    local u = string.match(m, '^[^\\t]*\\t[^\\t]*\\t(.*)$')
    if u and not seen[u] then
      seen[u] = true
      out[#out + 1] = u
    end
  end
  table.sort(out)
  return out
end
local expired = redis.call('ZCOUNT', room_set, '-inf', now - ttl)
local before = nil
if expired > 0 or mode ~= 'touch' then
  before = users()
  redis.call('ZREMRANGEBYSCORE', room_set, '-inf', now - ttl)
end
local missing = {}
"""
    + f"for i = {len(UPDATE.args) + 1}, #ARGV do\n"
    + """  local m = ARGV[i]
  if mode == 'add' then
    redis.call('ZADD', room_set, now, m)
  elseif mode == 'remove' then
    redis.call('ZREM', room_set, m)
  elseif redis.call('ZSCORE', room_set, m) then
    redis.call('ZADD', room_set, 'XX', now, m)
  else
    missing[#missing + 1] = m
  end
end
if redis.call('EXISTS', room_set) == 1 then
  redis.call('PEXPIRE', room_set, ttl * 3)
end
local reply = {0, 0}
if before ~= nil then
  local after = users()
  local changed = #after ~= #before
  for i = 1, #after do
    if after[i] ~= before[i] then changed = true end
  end
  reply = {changed and 1 or 0, #after}
  for i = 1, #after do reply[#reply + 1] = after[i] end
end
for i = 1, #missing do reply[#reply + 1] = missing[i] end
return reply
"""
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A room's users after an update, whether they changed, and members a touch did not find."""

    room: str
    users: list[str]
    changed: bool
    missing: list[str]


def member(node: str, sid: str, user: str) -> str:
    """The presence entry of one socket; the user goes last since only it may hold any text."""
    return f"{node}\t{sid}\t{user}"


def parse_member(entry: str) -> tuple[str, str, str]:
    """Split a presence entry into (node, sid, user)."""
    node, sid, user = entry.split("\t", 2)
    return node, sid, user


def snapshot(room: str, reply: Sequence[object]) -> Snapshot:
    """Decode the update script's reply."""
    changed, count = int(str(reply[0])), int(str(reply[1]))
    rest = [str(item) for item in reply[2:]]
    return Snapshot(room=room, users=rest[:count], changed=bool(changed), missing=rest[count:])


class Presence:
    """The presence sets of the rooms this node's sockets are in."""

    def __init__(self, shards: Shards, node: str, ttl_s: float) -> None:
        self.node = node
        self._ttl_ms = str(int(ttl_s * 1000))
        self._shards = shards

    def member(self, sid: str, user: str) -> str:
        """This node's presence entry for a socket."""
        return member(self.node, sid, user)

    async def _update(self, mode: Mode, room: str, members: Sequence[str]) -> Snapshot:
        (snap,) = await self._pipelined(mode, {room: members})
        return snap

    async def enter(self, room: str, sid: str, user: str) -> Snapshot:
        """Mark a socket present in a room; the snapshot always lists the users."""
        return await self._update("add", room, [self.member(sid, user)])

    async def leave(self, room: str, sid: str, user: str) -> Snapshot:
        """Mark a socket gone from a room."""
        return await self._update("remove", room, [self.member(sid, user)])

    async def remove_all(self, members_by_room: Mapping[str, Sequence[str]]) -> list[Snapshot]:
        """Remove many members at once (a node shutting down); one round trip."""
        return await self._pipelined("remove", members_by_room)

    async def heartbeat(self, members_by_room: Mapping[str, Sequence[str]]) -> list[Snapshot]:
        """Touch this node's members and drop expired ones; one round trip for every room."""
        return await self._pipelined("touch", members_by_room)

    async def _pipelined(
        self, mode: Mode, members_by_room: Mapping[str, Sequence[str]]
    ) -> list[Snapshot]:
        if not members_by_room:
            return []
        rooms = list(members_by_room)
        replies = await self._shards.run(
            [self._call(mode, room, members) for room, members in members_by_room.items()]
        )
        return [snapshot(room, reply) for room, reply in zip(rooms, replies, strict=True)]

    def _call(self, mode: Mode, room: str, members: Sequence[str]) -> Command:
        keys, args = UPDATE.order(
            keys={"room_set": names.presence_key(room)},
            args={"mode": mode, "ttl_ms": self._ttl_ms},
        )
        return _UPDATE.call(keys, [*args, *members])

    async def users(self, room: str) -> list[str]:
        """The room's users now (expired members dropped)."""
        return (await self._update("add", room, [])).users
