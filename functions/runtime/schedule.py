"""Schedule trigger: run a function every ``every_s`` seconds, once per tick across all hosts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from functions.deps import Deps
from functions.registry import Function
from functions.runtime import metrics
from functions.runtime.invoke import pause
from functions.triggers import Schedule

log = logging.getLogger("functions.schedule")

ScheduledHandler = Callable[[Deps], Awaitable[None]]


class ScheduleRunner:
    """Ticks on a fixed rate; a Redis lock per tick keeps N hosts from running it N times."""

    def __init__(self, fn: Function, deps: Deps) -> None:
        assert isinstance(fn.trigger, Schedule)
        self.fn = fn
        self.trigger: Schedule = fn.trigger
        self.deps = deps
        self.handler: ScheduledHandler = fn.load()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Return from run() at the next tick boundary."""
        self._stopping.set()

    async def run(self) -> None:
        """Tick until stop()."""
        every = self.trigger.every_s
        while not self._stopping.is_set():
            tick = int(time.time() // every)
            try:
                if await self.deps.redis.set(
                    f"chat:schedule:{self.fn.name}:{tick}",
                    self.deps.settings.node_id,
                    nx=True,
                    ex=every * 2,
                ):
                    await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("schedule tick failed", extra={"function": self.fn.name})
            delay = (tick + 1) * every - time.time()
            await pause(self._stopping, max(0.0, delay))

    async def _run_once(self) -> None:
        started = time.perf_counter()
        outcome = "ok"
        try:
            await asyncio.wait_for(self.handler(self.deps), timeout=self.fn.timeout_s)
        except TimeoutError:
            outcome = "timeout"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            metrics.INVOCATIONS.labels(self.fn.name, outcome).inc()
            metrics.DURATION.labels(self.fn.name).observe(time.perf_counter() - started)
