"""The retention function: delete messages older than CHAT_RETENTION_DAYS, in short batches.

The rooms' recent logs in Redis are trimmed past the deleted messages too, so history (which
merges the recent log into its pages) never serves a message that retention removed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from chat import frames, names
from chat.shards import RedisClient
from functions.deps import Deps
from functions.store import retention as store

log = logging.getLogger("functions.retention")

# Time left for the delete loop under the function's timeout; the rest waits for the next tick.
BUDGET_S = 40.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Purge:
    """What one retention run removed, and whether it reached the cutoff."""

    cutoff: datetime
    messages: int
    finished: bool
    # room -> the highest seq deleted there (its recent log is trimmed up to it)
    newest: dict[str, int] = field(default_factory=dict)


def cutoff_for(days: int, now: datetime | None = None) -> datetime:
    """The start of the oldest UTC day kept: whole days go, so daily analytics stay exact."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return _midnight(today - timedelta(days=days))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def trim_recent_logs(redis: RedisClient, newest: dict[str, int]) -> None:
    """Drop from each room's recent log every entry up to the newest deleted seq."""
    if not newest:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for room, seq in sorted(newest.items()):
            # MINID keeps the entry of seq+1 and later, exactly (not approximately).
            minid = frames.log_entry_id(seq + 1)
            pipe.xtrim(names.recent_log_key(room), minid=minid, approximate=False)
        await pipe.execute()


async def _delete_slice(
    pool: AsyncConnectionPool,
    low: datetime,
    high: datetime,
    batch: int,
    deadline: float,
    newest: dict[str, int],
) -> tuple[int, bool]:
    """Delete messages in [low, high) batch by batch; (count, whether the slice is empty)."""
    deleted = 0
    while time.monotonic() < deadline:
        async with pool.connection() as conn:
            rows = await store.delete_messages(conn, low, high, batch)
        for room, seq in rows:
            if seq > newest.get(room, 0):
                newest[room] = seq
        deleted += len(rows)
        if len(rows) < batch:
            return deleted, True
    return deleted, False


async def purge(
    pool: AsyncConnectionPool,
    cutoff: datetime,
    batch: int,
    budget_s: float = BUDGET_S,
    redis: RedisClient | None = None,
) -> Purge:
    """Delete messages created before ``cutoff``, oldest day first, ``batch`` rows a commit.

    With ``redis``, the rooms' recent logs are trimmed past what was deleted as well.
    """
    deadline = time.monotonic() + budget_s
    newest: dict[str, int] = {}
    try:
        return await _purge(pool, cutoff, batch, deadline, newest)
    finally:
        # Also after a failure midway: what was deleted must not live on in the recent logs.
        if redis is not None:
            await trim_recent_logs(redis, newest)


async def _purge(
    pool: AsyncConnectionPool,
    cutoff: datetime,
    batch: int,
    deadline: float,
    newest: dict[str, int],
) -> Purge:
    deleted = 0
    while True:
        async with pool.connection() as conn:
            oldest = await store.oldest_day(conn, cutoff.date())
        if oldest is None:
            break
        low = _midnight(oldest)
        count, done = await _delete_slice(
            pool, low, min(low + timedelta(days=1), cutoff), batch, deadline, newest
        )
        deleted += count
        if not done:
            return Purge(cutoff, deleted, finished=False, newest=newest)
        if count == 0:
            # The rollup names a day without messages: it is out of step, sweep by time below.
            break
    # A final sweep of the whole range catches rows the rollup did not know of.
    count, done = await _delete_slice(pool, _EPOCH, cutoff, batch, deadline, newest)
    deleted += count
    if done:
        async with pool.connection() as conn:
            await store.delete_activity(conn, cutoff.date())
    return Purge(cutoff, deleted, finished=done, newest=newest)


async def run(deps: Deps) -> None:
    """Scheduled entry point: a no-op unless CHAT_RETENTION_DAYS is set above 0."""
    settings = deps.settings
    if settings.retention_days <= 0:
        return
    cutoff = cutoff_for(settings.retention_days)
    result = await purge(await deps.pool(), cutoff, settings.retention_batch, redis=deps.redis)
    log.info(
        "retention removed %d messages before %s%s",
        result.messages,
        cutoff.date().isoformat(),
        "" if result.finished else " (more left for the next run)",
        extra={"deleted": result.messages, "cutoff": cutoff.isoformat()},
    )
