"""One invocation of a batch handler: timeout, outcome, structured log, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from functions.batch import BatchResult, Record
from functions.deps import Deps
from functions.registry import Function
from functions.runtime import metrics
from functions.triggers import describe

log = logging.getLogger("functions.invoke")

BatchHandler = Callable[[Sequence[Any], Deps], Awaitable[BatchResult | None]]


class TransientFailure(Exception):
    """The whole batch failed in a way worth retrying (an exception or a timeout)."""


async def invoke(
    fn: Function,
    handler: BatchHandler,
    batch: Sequence[Record],
    deps: Deps,
    timeout_s: float | None = None,
) -> BatchResult:
    """Run ``handler`` over ``batch`` within ``fn.timeout_s`` (or the shorter ``timeout_s``);
    raise TransientFailure on failure."""
    limit = fn.timeout_s if timeout_s is None else min(fn.timeout_s, timeout_s)
    started = time.perf_counter()
    outcome = "ok"
    result = BatchResult()
    try:
        returned = await asyncio.wait_for(handler(batch, deps), timeout=limit)
        result = returned if returned is not None else BatchResult()
        if not result.clean:
            outcome = "partial"
        return result
    except TimeoutError:
        outcome = "timeout"
        raise TransientFailure(f"{fn.name} timed out after {limit:g}s") from None
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except Exception as exc:
        outcome = "error"
        raise TransientFailure(f"{fn.name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        duration = time.perf_counter() - started
        metrics.INVOCATIONS.labels(fn.name, outcome).inc()
        metrics.DURATION.labels(fn.name).observe(duration)
        metrics.BATCH_SIZE.labels(fn.name).observe(len(batch))
        level = {"ok": logging.DEBUG, "partial": logging.INFO}.get(outcome, logging.WARNING)
        log.log(
            level,
            "invoked %s: %s, %d records, %.1f ms",
            fn.name,
            outcome,
            len(batch),
            duration * 1000,
            extra={
                "function": fn.name,
                "trigger": describe(fn.trigger),
                "batch_size": len(batch),
                "duration_ms": round(duration * 1000, 2),
                "outcome": outcome,
                "failed": len(result.failed),
                "poison": len(result.poison),
            },
        )


async def pause(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


def backoff_s(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Capped exponential backoff before retry number ``attempt`` (1-based)."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))))
