"""The one Lambda entry point of every registry function, picked by ``CHAT_FUNCTION``.

Kafka functions take MSK or self-managed Kafka events, run them through the runtime's failure
policy in process (an MSK event source mapping cannot bisect: the function does, before it
answers) and answer with Lambda's partial-batch reply, from the first record of each partition
left unfinished. Redis-stream functions take the stream bridge's batches (the bridge runs the
policy); HTTP functions serve their ASGI app through Mangum; scheduled functions run on
EventBridge ticks. Handlers see only the typed records of ``functions.batch``, exactly as under
the local runtime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar, assert_never

from chat.clients import on_password_refused
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
from functions.runtime.policy import DeadLetterCap, Limits, Policy, produce_dead_letters
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule

FUNCTION_ENV = "CHAT_FUNCTION"

log = logging.getLogger("functions.aws")

T = TypeVar("T")
# Seconds an invocation keeps for dead-lettering and replying: no handler call runs into them.
_LAMBDA_RESERVE_S = 3.0
ScheduledHandler = Callable[[Deps], Awaitable[None]]


class LambdaRuntime:
    """One function's Lambda execution environment: its Deps, its event loop, its adapter."""

    def __init__(self, fn: Function, deps: Deps) -> None:
        self.fn = fn
        self.deps = deps
        # One loop for the environment's lifetime: the clients in Deps are bound to it.
        self.loop = asyncio.new_event_loop()
        # An HTTP function's app is built on its first request, from its routes.
        self._handler: Any = None if isinstance(fn.trigger, HttpRoute) else fn.load()
        self._http: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
        self._dead_letter_cap: DeadLetterCap | None = None

    @classmethod
    def from_env(cls) -> LambdaRuntime:
        """Build from ``CHAT_FUNCTION`` and the settings (secrets resolved from AWS)."""
        name = os.environ.get(FUNCTION_ENV, "")
        fn = registry.get(name)
        deps = Deps(load_settings())
        # RDS rotates the database password: a refused login re-reads it and connects again.
        on_password_refused(reload_secrets)
        return cls(fn, deps)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any] | None:
        """Handle one invocation according to the function's trigger."""
        trigger = self.fn.trigger
        match trigger:
            case KafkaTopic():
                return self._run(self._kafka(KafkaEvent.parse(event), trigger, context))
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

                from functions.web import function_app

                self._handler = function_app(self.fn, self.deps)
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

    async def _kafka(self, event: KafkaEvent, trigger: KafkaTopic, context: Any) -> dict[str, Any]:
        # Records the policy leaves unfinished (the dead-letter cap tripped, the invocation
        # ran out of time, a dead letter could not be written) are reported as failures:
        # the event source mapping hands them over again, from the first of each partition.
        remaining = _remaining_s(context)

        async def call(records: Sequence[KafkaRecord]) -> BatchResult:
            budget = None if remaining is None else remaining() - _LAMBDA_RESERVE_S
            result = await invoke(self.fn, self._handler, records, self.deps, timeout_s=budget)
            if result.settle is not None:
                await asyncio.wait_for(result.settle, timeout=self.fn.timeout_s)
            return result

        policy: Policy[KafkaRecord] = Policy(
            self.fn.name,
            Limits.of(trigger),
            call,
            _LambdaKafkaSink(self.deps, self.fn.name, trigger.dead_letter),
            cap=self._cap(trigger),
            deadline=(lambda: False)
            if remaining is None
            else (lambda: remaining() < 2 * _LAMBDA_RESERVE_S),
            available=self.deps.available,
        )
        unfinished = await policy.run(event.records)
        return kafka_batch_response(event.records, unfinished)

    def _cap(self, trigger: KafkaTopic) -> DeadLetterCap:
        # One cap per execution environment, across its invocations.
        if self._dead_letter_cap is None:
            self._dead_letter_cap = DeadLetterCap(self.fn.name, Limits.of(trigger))
        return self._dead_letter_cap

    async def _scheduled(self) -> None:
        run: ScheduledHandler = self._handler
        await asyncio.wait_for(run(self.deps), timeout=self.fn.timeout_s)


class _LambdaKafkaSink:
    """The policy's sink in a Lambda: done is reported by the reply, dead letters produced."""

    def __init__(self, deps: Deps, function: str, dead_letter: str | None) -> None:
        self.deps = deps
        self.function = function
        self.topic = dead_letter

    def owned(self, records: list[KafkaRecord]) -> list[KafkaRecord]:
        return records

    async def done(self, records: list[KafkaRecord], settle: asyncio.Future[None] | None) -> None:
        return None

    async def again(self, records: list[KafkaRecord]) -> list[KafkaRecord]:
        return [dataclasses.replace(r, attempt=r.attempt + 1) for r in records]

    async def dead_letter(self, records: list[KafkaRecord], reasons: dict[str, str]) -> bool:
        try:
            await produce_dead_letters(self.deps, self.function, self.topic, records, reasons)
        except Exception:
            # Left unfinished: reported as failures, the event source mapping retries them.
            log.exception("dead-lettering failed", extra={"function": self.function})
            return False
        return True


def _remaining_s(context: Any) -> Callable[[], float] | None:
    """Seconds left in this invocation, when Lambda's context says."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if remaining_ms is None:
        return None
    return lambda: float(remaining_ms()) / 1000


_runtime: LambdaRuntime | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any] | None:
    """Lambda's handler: ``functions.aws.lambda_handler.handler``."""
    global _runtime
    if _runtime is None:
        _runtime = LambdaRuntime.from_env()
    return _runtime(event, context)
