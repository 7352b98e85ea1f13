"""Rate limits held in Redis, so a user's budget is one budget whichever nodes their sockets use."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from chat import names
from chat.contract import ContractError, ErrorCode

Scope = Literal["user", "socket"]

# GCRA (the generic cell rate algorithm): one number per bucket, the theoretical arrival time of
# the next event. Every bucket of a check is tested first and updated only if all allow, in one
# script, so concurrent nodes can never both spend the last unit. Redis's clock is the only clock,
# so skew between gateway hosts changes nothing.
#   KEYS: one per bucket
#   ARGV: per bucket, the emission interval and the burst tolerance, in milliseconds
#   returns 0 when allowed, else how many milliseconds until it would be
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local next_tat = tat + interval
  local early = next_tat - tolerance - now
  if early > wait then wait = early end
  tats[i] = next_tat
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1)
end
return 0
"""

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
                f"bad rate limit {part!r}: write <event>.<user|socket>=<per second>:<burst>"
            )
        event, scope, per_s, burst = match.groups()
        key: tuple[str, Scope] = (event, "user" if scope == "user" else "socket")
        if key in limits:
            raise ValueError(f"rate limit {event}.{scope} is given twice")
        limits[key] = Limit(float(per_s), int(burst))
    return limits


class RateLimiter:
    """Checks and spends a user's and a socket's buckets for one event, atomically."""

    def __init__(self, redis: aioredis.Redis, limits: Mapping[tuple[str, Scope], Limit]) -> None:
        self._by_event: dict[str, dict[Scope, Limit]] = {}
        for (event, scope), limit in limits.items():
            self._by_event.setdefault(event, {})[scope] = limit
        self._script = redis.register_script(_GCRA)

    def limits_for(self, event: str) -> dict[Scope, Limit]:
        """The limits that apply to ``event``, by scope."""
        return self._by_event.get(event, {})

    async def retry_after_ms(self, event: str, user: str, sid: str) -> int:
        """Spend one unit of every bucket of ``event``; 0 when allowed, else the wait in ms."""
        keys: list[str] = []
        args: list[str] = []
        for scope, limit in self.limits_for(event).items():
            bucket = event if scope == "user" else f"{event}:s:{sid}"
            keys.append(names.rate_limit_key(user, bucket))
            args += [f"{limit.interval_ms:.3f}", f"{limit.tolerance_ms:.3f}"]
        if not keys:
            return 0
        return int(await self._script(keys=keys, args=args))

    async def check(self, event: str, user: str, sid: str) -> None:
        """Raise ``rate_limited`` with ``retry_after_ms`` when the event is over its limits."""
        wait_ms = await self.retry_after_ms(event, user, sid)
        if wait_ms > 0:
            raise ContractError(
                ErrorCode.RATE_LIMITED,
                f"too many {event} events; retry in {wait_ms} ms",
                retry_after_ms=max(1, math.ceil(wait_ms)),
            )
