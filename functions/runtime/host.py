"""A function host: runs the selected functions on their triggers and serves their HTTP routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator, Sequence
from typing import Any, Protocol, assert_never

import uvicorn

from functions.deps import Deps
from functions.registry import Function
from functions.runtime import metrics
from functions.runtime.http import build_app
from functions.runtime.kafka_topic import KafkaTopicRunner
from functions.runtime.partitions import PartitionedRunner
from functions.runtime.redis_stream import RedisStreamRunner
from functions.runtime.schedule import ScheduleRunner
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule

log = logging.getLogger("functions.host")

# How often the backlog gauges (stream pending + lag) are refreshed.
_BACKLOG_EVERY_S = 5.0
# What a stop may take beyond the grace period: cancelled runners leave their consumer groups.
_AFTER_GRACE_S = 3.0


class Runner(Protocol):
    """What the host needs of a trigger runner."""

    def stop(self) -> None: ...

    async def run(self) -> None: ...


class _Server(uvicorn.Server):
    # The host owns SIGTERM/SIGINT: it stops triggers and HTTP together, within one bound.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def stream_backlog(deps: Deps, trigger: RedisStream) -> int:
    """Entries of the trigger's streams not yet handled: pending plus not yet read."""
    total = 0
    for partition in trigger.partitions(deps.settings.inbound_partitions):
        if not await deps.redis.exists(partition.stream):
            continue
        groups: list[dict[str, Any]] = await deps.redis.xinfo_groups(partition.stream)
        for g in groups:
            if g.get("name") == trigger.group:
                total += int(g.get("pending") or 0) + int(g.get("lag") or 0)
    return total


def build_runners(functions: Sequence[Function], deps: Deps) -> list[Runner]:
    """One runner per unit of concurrency of every triggered function."""
    runners: list[Runner] = []
    node = deps.settings.node_id
    for fn in functions:
        trigger = fn.trigger
        match trigger:
            case RedisStream(partitioned=True):
                runners.append(PartitionedRunner(fn, deps, consumer=f"{node}-{fn.name}"))
            case RedisStream():
                runners += [
                    RedisStreamRunner(fn, deps, consumer=f"{node}-{fn.name}-{i}")
                    for i in range(fn.concurrency)
                ]
            case KafkaTopic():
                runners += [
                    KafkaTopicRunner(fn, deps, client_id=f"{node}-{fn.name}-{i}")
                    for i in range(fn.concurrency)
                ]
            case Schedule():
                runners.append(ScheduleRunner(fn, deps))
            case HttpRoute():
                pass  # served by the host's ASGI app
            case _:
                assert_never(trigger)
    return runners


class Host:
    """Runs functions until SIGTERM/SIGINT, then drains within ``shutdown_grace_s``."""

    def __init__(
        self,
        functions: Sequence[Function],
        deps: Deps,
        host: str = "127.0.0.1",
        port: int = 8080,
        shutdown_grace_s: float = 20.0,
    ) -> None:
        self.functions = list(functions)
        self.deps = deps
        self.shutdown_grace_s = shutdown_grace_s
        self.runners = build_runners(self.functions, deps)
        self.server = _Server(
            uvicorn.Config(
                build_app(self.functions, deps),
                host=host,
                port=port,
                lifespan="off",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=max(1, int(shutdown_grace_s / 2)),
            )
        )
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Begin a graceful stop (idempotent)."""
        if not self._stop.is_set():
            log.info("stopping: finishing in-flight batches")
            self._stop.set()

    async def serve(self) -> None:
        """Run until stop() or a signal; in-flight batches finish or are handed back."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        tasks = [asyncio.create_task(r.run(), name=type(r).__name__) for r in self.runners]
        backlog = asyncio.create_task(self._observe_backlog(), name="backlog")
        http = asyncio.create_task(self.server.serve(), name="http")
        names = ", ".join(f.name for f in self.functions)
        log.info("function host up: %s", names, extra={"functions": names})
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait([stopper, http, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if not self._stop.is_set():
            failed = [t for t in [http, *tasks] if t.done()]
            for t in failed:
                if not t.cancelled() and t.exception() is not None:
                    log.error("%s ended: %r", t.get_name(), t.exception())
        # The backlog gauge holds no work and never ends by itself: it must not count toward
        # the drain, or every stop would wait out the whole grace period.
        backlog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await backlog
        await self._drain(http, tasks)
        stopper.cancel()

    async def _drain(self, http: asyncio.Task[None], tasks: list[asyncio.Task[Any]]) -> None:
        for r in self.runners:
            r.stop()
        self.server.should_exit = True
        _, pending = await asyncio.wait([http, *tasks], timeout=self.shutdown_grace_s)
        for t in pending:
            # Past the bound: un-acked work is handed back (stream entries are reclaimed
            # after the visibility timeout, Kafka offsets were never committed).
            t.cancel()
        # Cancelled runners still leave their groups and flush; that, too, is bounded.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*pending, return_exceptions=True), timeout=_AFTER_GRACE_S
            )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.deps.aclose(), timeout=_AFTER_GRACE_S)
        log.info("function host stopped", extra={"cancelled": len(pending)})

    async def _observe_backlog(self) -> None:
        streams = [f for f in self.functions if isinstance(f.trigger, RedisStream)]
        while True:
            for fn in streams:
                assert isinstance(fn.trigger, RedisStream)
                with contextlib.suppress(Exception):
                    backlog = await stream_backlog(self.deps, fn.trigger)
                    metrics.BACKLOG.labels(fn.name).set(backlog)
            await asyncio.sleep(_BACKLOG_EVERY_S)
