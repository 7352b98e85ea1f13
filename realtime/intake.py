"""Accepting sends in batches: one round trip charges many sends, one more appends them.

A send is charged first (its user's and socket's rate-limit buckets, atomically) and only an
allowed one is appended to its room's inbound partition; the caller learns the outcome once the
append is confirmed, by the replicas too when ``redis_wait_replicas`` asks for it (a failover
then never loses an acked send). A refused send is never appended. A send whose append fails
(Redis down, replicas not confirming) answers an error and may be retried with the same
``client_msg_id`` (its rate-limit unit stays spent): the message function deduplicates a send
appended twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from chat import inbound, names
from chat.ratelimit import RateLimiter, Spend
from chat.settings import Settings
from chat.shards import Command, Shards

log = logging.getLogger("realtime.intake")

# Sends taken per round trip; more wait for the next one.
MAX_BATCH = 256


class SendIntake:
    """Queues sends and flushes them as one script call; each caller awaits its own outcome.

    Under light load a batch is one send and costs what a direct call would; under heavy load
    the sends that arrive while a batch is in flight ride the next one, so the Redis client's
    per-command cost is paid per batch, not per send.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        shards: Shards,
        settings: Settings,
        stream: str = names.INBOUND_STREAM,
    ) -> None:
        self.limiter = limiter
        self.shards = shards
        self.stream = stream
        self.partitions = settings.inbound_partitions
        self.wait_replicas = settings.redis_wait_replicas
        self._queue: list[tuple[Spend | None, Mapping[str, str], asyncio.Future[int]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def accept(
        self, user: str, sid: str, fields: Mapping[str, str], event: str | None = "send"
    ) -> int:
        """Charge ``event``'s rate limits (none when None) and append the entry; 0 when
        accepted, else the wait in ms."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_forever(), name="send-intake")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        spend = None if event is None else Spend(event, user, sid)
        self._queue.append((spend, fields, future))
        self._ready.set()
        return await future

    async def _flush_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._flush(batch)

    def partition(self, room: str) -> str:
        """The inbound stream partition of ``room``."""
        return names.partition(self.stream, names.partition_of(room, self.partitions))

    async def _flush(
        self, batch: list[tuple[Spend | None, Mapping[str, str], asyncio.Future[int]]]
    ) -> None:
        try:
            charged = [(i, spend) for i, (spend, _, _) in enumerate(batch) if spend is not None]
            waits = [0] * len(batch)
            if charged:
                spent = await self.limiter.spend([spend for _, spend in charged])
                for (i, _), wait in zip(charged, spent, strict=True):
                    waits[i] = wait
            appends: list[Command] = []
            appended: list[int] = []
            for i, ((_, fields, _), wait) in enumerate(zip(batch, waits, strict=True)):
                if wait:
                    continue
                stream = self.partition(inbound.room_of(fields))
                pairs = [part for item in fields.items() for part in item]
                appends.append(Command(stream, ("XADD", stream, "*", *pairs)))
                appended.append(i)
            outcomes: list[object] = []
            if appends:
                # Each send learns its own outcome: a node failing over fails only its sends.
                outcomes = await self.shards.run(
                    appends, wait_replicas=self.wait_replicas, return_exceptions=True
                )
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            # Every send of the batch learns the failure; none of them is acked.
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for i, outcome in zip(appended, outcomes, strict=True):
            future = batch[i][2]
            if isinstance(outcome, BaseException) and not future.done():
                future.set_exception(outcome)
        for (_, _, future), wait in zip(batch, waits, strict=True):
            if not future.done():
                future.set_result(wait)

    async def aclose(self) -> None:
        """Stop the flusher (sends still queued get cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, _, future in self._queue:
            future.cancel()
        self._queue.clear()
