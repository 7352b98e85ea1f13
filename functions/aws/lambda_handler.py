"""The one Lambda entry point of every registry function, picked by ``CHAT_FUNCTION``.

Kafka functions take MSK or self-managed Kafka events and answer with Lambda's partial-batch
reply; Redis-stream functions take the stream bridge's batches; HTTP functions serve their ASGI
app through Mangum; scheduled functions run on EventBridge ticks. Handlers see only the typed
records of ``functions.batch``, exactly as under the local runtime.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar, assert_never

from chat.clients import on_password_refused
from functions import deps as deps_module
from functions import registry
from functions.aws.events import (
    BridgeBatch,
    KafkaEvent,
    ScheduledEvent,
    encode_result,
    kafka_batch_response,
)
from functions.aws.secrets import load_settings, reload_secrets
from functions.batch import BatchResult, KafkaRecord
from functions.deps import Deps
from functions.registry import Function
from functions.runtime.invoke import BatchHandler, invoke
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule

FUNCTION_ENV = "CHAT_FUNCTION"

log = logging.getLogger("functions.aws")

T = TypeVar("T")
ScheduledHandler = Callable[[Deps], Awaitable[None]]


class LambdaRuntime:
    """One function's Lambda execution environment: its Deps, its event loop, its adapter."""

    def __init__(self, fn: Function, deps: Deps) -> None:
        self.fn = fn
        self.deps = deps
        # One loop for the environment's lifetime: the clients in Deps are bound to it.
        self.loop = asyncio.new_event_loop()
        self._handler: Any = fn.load()
        self._http: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None

    @classmethod
    def from_env(cls) -> LambdaRuntime:
        """Build from ``CHAT_FUNCTION`` and the settings (secrets resolved from AWS)."""
        name = os.environ.get(FUNCTION_ENV, "")
        fn = registry.get(name)
        deps = Deps(load_settings())
        # RDS rotates the database password: a refused login re-reads it and connects again.
        on_password_refused(reload_secrets)
        deps_module.install(deps)
        return cls(fn, deps)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any] | None:
        """Handle one invocation according to the function's trigger."""
        trigger = self.fn.trigger
        match trigger:
            case KafkaTopic():
                return self._run(self._kafka(KafkaEvent.parse(event), trigger))
            case RedisStream():
                batch = BridgeBatch.parse(event)
                if batch.function != self.fn.name:
                    raise ValueError(f"bridge batch for {batch.function!r} sent to {self.fn.name}")
                return self._run(self._stream(batch))
            case HttpRoute():
                return self._serve_http(event, context)
            case Schedule():
                tick = ScheduledEvent.parse(event)
                log.info("scheduled run of %s at %s", self.fn.name, tick.time)
                self._run(self._scheduled())
                return None
            case _:
                assert_never(trigger)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def _serve_http(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Mangum runs the ASGI app on the thread's current loop: make it ours for the call.
        asyncio.set_event_loop(self.loop)
        try:
            if self._http is None:
                from mangum import Mangum  # only HTTP functions ship it

                self._http = Mangum(self._handler, lifespan="off")
            return self._http(event, context)
        finally:
            asyncio.set_event_loop(None)

    def close(self) -> None:
        """Close the environment's event loop."""
        self.loop.close()

    async def _batch(self, records: Sequence[Any]) -> BatchResult:
        handler: BatchHandler = self._handler
        return await invoke(self.fn, handler, records, self.deps)

    async def _stream(self, batch: BridgeBatch) -> dict[str, Any]:
        # A TransientFailure propagates: the invocation errors and the bridge retries the batch.
        result = await self._batch(batch.records)
        if result.settle is not None:
            # An invocation cannot hold records past its reply: wait for the settle (Kafka's
            # confirmation) here, within the function's timeout; the bridge retries on failure.
            await asyncio.wait_for(result.settle, timeout=self.fn.timeout_s)
        return encode_result(result)

    async def _kafka(self, event: KafkaEvent, trigger: KafkaTopic) -> dict[str, Any]:
        # A TransientFailure propagates: the event source mapping retries the whole batch
        # (bounded by the trigger's max_attempts), then sends it to the dead-letter topic.
        result = await self._batch(event.records)
        if result.poison:
            poison = [r for r in event.records if r.id in result.poison]
            await dead_letter(self.deps, self.fn, trigger, poison, result.poison)
        return kafka_batch_response(event.records, result.failed)

    async def _scheduled(self) -> None:
        run: ScheduledHandler = self._handler
        await asyncio.wait_for(run(self.deps), timeout=self.fn.timeout_s)


async def dead_letter(
    deps: Deps,
    fn: Function,
    trigger: KafkaTopic,
    records: Sequence[KafkaRecord],
    reasons: dict[str, str],
) -> None:
    """Produce poison records to the dead-letter topic, with the local runtime's headers."""
    log.warning(
        "dead-lettering %d records",
        len(records),
        extra={"function": fn.name, "dead_letter": trigger.dead_letter},
    )
    if not trigger.dead_letter:
        return
    await deps.produce(
        trigger.dead_letter,
        [
            (
                r.key,
                r.value,
                {
                    "error": reasons.get(r.id, "failed"),
                    "attempts": str(r.attempt),
                    "source": r.id,
                    "function": fn.name,
                },
            )
            for r in records
        ],
    )


_runtime: LambdaRuntime | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any] | None:
    """Lambda's handler: ``functions.aws.lambda_handler.handler``."""
    global _runtime
    if _runtime is None:
        _runtime = LambdaRuntime.from_env()
    return _runtime(event, context)
