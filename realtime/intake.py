"""Accepting sends in batches: one Redis round trip charges and appends many sends at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from chat.ratelimit import RateLimiter, Spend

log = logging.getLogger("realtime.intake")

# Sends taken per round trip; more wait for the next one.
MAX_BATCH = 256


class SendIntake:
    """Queues sends and flushes them as one script call; each caller awaits its own outcome.

    Under light load a batch is one send and costs what a direct call would; under heavy load
    the sends that arrive while a batch is in flight ride the next one, so the Redis client's
    per-command cost is paid per batch, not per send.
    """

    def __init__(self, limiter: RateLimiter, stream: str) -> None:
        self.limiter = limiter
        self.stream = stream
        self._queue: list[tuple[Spend, asyncio.Future[int]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def accept(self, user: str, sid: str, fields: Mapping[str, str]) -> int:
        """Charge the send's rate limits and append it; 0 when accepted, else the wait in ms."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_forever(), name="send-intake")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((Spend("send", user, sid, fields), future))
        self._ready.set()
        return await future

    async def _flush_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[Spend, asyncio.Future[int]]]) -> None:
        try:
            waits = await self.limiter.spend(self.stream, [spend for spend, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            # Every send of the batch learns the failure; none of them was appended.
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), wait in zip(batch, waits, strict=True):
            if not future.done():
                future.set_result(wait)

    async def aclose(self) -> None:
        """Stop the flusher (sends still queued get cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()
