"""The retention function: delete messages older than CHAT_RETENTION_DAYS, in short batches."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from functions.deps import Deps

log = logging.getLogger("functions.retention")

# Time left for the delete loop under the function's timeout; the rest waits for the next tick.
BUDGET_S = 40.0

# The oldest day that still has messages, from the analytics rollup's day index: no scan.
_OLDEST_DAY = "SELECT min(day) FROM room_daily_stats WHERE day < %s"
# One batch within a time slice. The created_at BRIN index reads only the slice's block
# ranges, so the rows a previous batch left dead are not read again by every later batch.
# SKIP LOCKED lets a second runner (or a writer on an old row) pass instead of queueing.
_DELETE_BATCH = """
DELETE FROM messages WHERE id IN (
    SELECT id FROM messages WHERE created_at >= %s AND created_at < %s
    LIMIT %s FOR UPDATE SKIP LOCKED
)
"""
# Activity rows of the removed days: the messages are gone, so are the figures about them.
# (Room counters follow the deleted rows through the analytics trigger.)
_DELETE_ACTIVITY = "DELETE FROM user_daily_activity WHERE day < %s"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Purge:
    """What one retention run removed, and whether it reached the cutoff."""

    cutoff: datetime
    messages: int
    finished: bool


def cutoff_for(days: int, now: datetime | None = None) -> datetime:
    """The start of the oldest UTC day kept: whole days go, so daily analytics stay exact."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return _midnight(today - timedelta(days=days))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def _delete_slice(
    pool: AsyncConnectionPool, low: datetime, high: datetime, batch: int, deadline: float
) -> tuple[int, bool]:
    """Delete messages in [low, high) batch by batch; (count, whether the slice is empty)."""
    deleted = 0
    while time.monotonic() < deadline:
        async with pool.connection() as conn:
            cur = await conn.execute(_DELETE_BATCH, (low, high, batch))
            count = cur.rowcount
        deleted += count
        if count < batch:
            return deleted, True
    return deleted, False


async def purge(
    pool: AsyncConnectionPool, cutoff: datetime, batch: int, budget_s: float = BUDGET_S
) -> Purge:
    """Delete messages created before ``cutoff``, oldest day first, ``batch`` rows a commit."""
    deadline = time.monotonic() + budget_s
    deleted = 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(_OLDEST_DAY, (cutoff.date(),))
            row = await cur.fetchone()
        oldest = row[0] if row else None
        if oldest is None:
            break
        low = _midnight(oldest)
        count, done = await _delete_slice(
            pool, low, min(low + timedelta(days=1), cutoff), batch, deadline
        )
        deleted += count
        if not done:
            return Purge(cutoff, deleted, finished=False)
        if count == 0:
            # The rollup names a day without messages: it is out of step, sweep by time below.
            break
    # A final sweep of the whole range catches rows the rollup did not know of.
    count, done = await _delete_slice(pool, _EPOCH, cutoff, batch, deadline)
    deleted += count
    if done:
        async with pool.connection() as conn:
            await conn.execute(_DELETE_ACTIVITY, (cutoff.date(),))
    return Purge(cutoff, deleted, finished=done)


async def run(deps: Deps) -> None:
    """Scheduled entry point: a no-op unless CHAT_RETENTION_DAYS is set above 0."""
    settings = deps.settings
    if settings.retention_days <= 0:
        return
    cutoff = cutoff_for(settings.retention_days)
    result = await purge(await deps.pool(), cutoff, settings.retention_batch)
    log.info(
        "retention removed %d messages before %s%s",
        result.messages,
        cutoff.date().isoformat(),
        "" if result.finished else " (more left for the next run)",
        extra={"deleted": result.messages, "cutoff": cutoff.isoformat()},
    )
