"""Rate limits held in Redis, so a user's budget is one budget whichever nodes their sockets use."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from chat import names
from chat.contract import ContractError, ErrorCode
from chat.lua import Signature
from chat.settings import env_name
from chat.shards import Command, Shards

Scope = Literal["user", "socket"]

# GCRA (the generic cell rate algorithm): one number per bucket, the theoretical arrival time of
# the next event. The script takes a batch of events; for each, every bucket is tested first and
# updated only if all allow, so concurrent nodes can never both spend the last unit. Redis's
# clock is the only clock, so skew between gateway hosts changes nothing. One call's buckets
# share a slot (a user's buckets share a hash tag), so it runs on a Redis Cluster too.
#   KEYS: the buckets, each once (the first routes the call)
#   ARGV: the number of events, then per event its bucket count and, per bucket, the bucket's
#         place in KEYS (from 1), its emission interval and burst tolerance in milliseconds
#   returns per event 0 when allowed (and spent), else how many milliseconds until it would be
# One call per send: ``RateLimiter._call`` lays its lists out by hand (a unit test holds them to
# these names).
SPEND = Signature(keys=(), args=("event_count",), item_keys=("bucket",))
_SPEND = SPEND.script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
"""
    + f"local a = {len(SPEND.args) + 1}\n"
    + """for e = 1, tonumber(event_count) do
  local wait, keys, tats = 0, {}, {}
  local bucket_count = tonumber(ARGV[a])
  for b = 1, bucket_count do
    local place, interval_ms, tolerance_ms = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
    local bucket = KEYS[tonumber(place)]
    local tat = tonumber(redis.call('GET', bucket) or now)
    if tat < now then tat = now end
    local next_tat = tat + tonumber(interval_ms)
    local early = next_tat - tonumber(tolerance_ms) - now
    if early > wait then wait = early end
    keys[b], tats[b] = bucket, next_tat
    a = a + 3
  end
  a = a + 1
  if wait > 0 then
    out[e] = math.ceil(wait)
  else
    for b, key in ipairs(keys) do
      redis.call('SET', key, string.format('%.3f', tats[b]), 'PX', math.ceil(tats[b] - now) + 1)
    end
    out[e] = 0
  end
end
return out
"""
)


@dataclass(frozen=True, slots=True)
class Spend:
    """One event to charge: whose buckets."""

    event: str
    user: str
    sid: str


_RULE = re.compile(r"^([a-z_]+)\.(user|socket)=([0-9]*\.?[0-9]+):([0-9]+)$")


@dataclass(frozen=True, slots=True)
class Limit:
    """A sustained rate (events per second) and a burst allowed on top of it."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not self.per_s > 0:
            raise ValueError(f"per_s must be positive, not {self.per_s}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, not {self.burst}")

    @property
    def interval_ms(self) -> float:
        """Milliseconds one event costs."""
        return 1000.0 / self.per_s

    @property
    def tolerance_ms(self) -> float:
        """How far ahead of now a bucket may run: ``burst`` events at once."""
        return self.interval_ms * self.burst


def parse_limits(spec: str) -> dict[tuple[str, Scope], Limit]:
    """Parse ``"send.user=20:40,typing.socket=2:5"`` (rate per second : burst), naming bad parts."""
    limits: dict[tuple[str, Scope], Limit] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        match = _RULE.match(part)
        if match is None:
            raise ValueError(
                f"bad rate limit {part!r} ({env_name('rate_limits')}): "
                "write <event>.<user|socket>=<per second>:<burst>"
            )
        event, scope, per_s, burst = match.groups()
        key: tuple[str, Scope] = (event, "user" if scope == "user" else "socket")
        if key in limits:
            raise ValueError(
                f"rate limit {event}.{scope} is given twice in {env_name('rate_limits')}"
            )
        limits[key] = Limit(float(per_s), int(burst))
    return limits


class RateLimiter:
    """Checks and spends a user's and a socket's buckets for one event, atomically."""

    def __init__(self, shards: Shards, limits: Mapping[tuple[str, Scope], Limit]) -> None:
        self.shards = shards
        self._by_event: dict[str, dict[Scope, Limit]] = {}
        for (event, scope), limit in limits.items():
            self._by_event.setdefault(event, {})[scope] = limit

    def limits_for(self, event: str) -> dict[Scope, Limit]:
        """The limits that apply to ``event``, by scope."""
        return self._by_event.get(event, {})

    async def spend(self, events: Sequence[Spend]) -> list[int]:
        """Charge each event in order; 0 when allowed (and spent), else the wait in ms."""
        # One script call per slot (all events on a standalone Redis, per user on a cluster).
        groups: dict[int, list[int]] = {}
        for i, ev in enumerate(events):
            if self.limits_for(ev.event):
                groups.setdefault(self.shards.slot(names.rate_limit_key(ev.user, "")), []).append(i)
        waits = [0] * len(events)
        if not groups:
            return waits
        calls = [self._call([events[i] for i in idx]) for idx in groups.values()]
        replies = await self.shards.run(calls)
        for idx, reply in zip(groups.values(), replies, strict=True):
            for i, wait in zip(idx, reply, strict=True):
                waits[i] = int(wait)
        return waits

    # The lists follow SPEND's layout (a unit test holds them to it).
    def _call(self, events: Sequence[Spend]) -> Command:
        keys: list[str] = []
        index: dict[str, int] = {}
        args: list[str | float | int] = [len(events)]
        for ev in events:
            limits = self.limits_for(ev.event)
            args.append(len(limits))
            for scope, limit in limits.items():
                bucket = ev.event if scope == "user" else f"{ev.event}:s:{ev.sid}"
                key = names.rate_limit_key(ev.user, bucket)
                if key not in index:
                    keys.append(key)
                    index[key] = len(keys)  # Lua indexes from 1
                args += [index[key], f"{limit.interval_ms:.3f}", f"{limit.tolerance_ms:.3f}"]
        return _SPEND.call(keys, args)

    async def retry_after_ms(self, event: str, user: str, sid: str) -> int:
        """Spend one unit of every bucket of ``event``; 0 when allowed, else the wait in ms."""
        (wait,) = await self.spend([Spend(event, user, sid)])
        return wait

    async def check(self, event: str, user: str, sid: str) -> None:
        """Raise ``rate_limited`` with ``retry_after_ms`` when the event is over its limits."""
        raise_if_limited(event, await self.retry_after_ms(event, user, sid))


def raise_if_limited(event: str, wait_ms: int) -> None:
    """Raise ``rate_limited`` with ``retry_after_ms`` when ``wait_ms`` is positive."""
    if wait_ms > 0:
        raise ContractError(
            ErrorCode.RATE_LIMITED,
            f"too many {event} events; retry in {wait_ms} ms",
            retry_after_ms=max(1, math.ceil(wait_ms)),
        )
