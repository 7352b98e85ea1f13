"""The one failure policy of every batch trigger: bisect on error, retry alone, dead-letter, cap.

Used by the Redis-stream runner (and so the stream bridge to Lambda), the Kafka runner and the
Lambda Kafka entry point. The rules, for one batch:

- the handler raises (or times out, or its Lambda errors) on a batch of several records: the
  batch is split in halves and each half is run on its own, first half first, until the
  failing record is alone (like Lambda's bisect-on-error); splitting counts no attempt;
- records the handler names ``poison`` are dead-lettered at once, never retried;
- records the handler names ``failed``, and a record that fails alone, are retried together
  after a backoff, each retry counting an attempt; a record still failing at ``max_attempts``
  is dead-lettered with the last error; a record delivered more than ``max_attempts`` times
  (reclaimed after crashes) is dead-lettered without running it again;
- every other record succeeded and is handed to the trigger's ``done`` (acked, committed);
- at most ``dead_letter_cap`` records are dead-lettered per ``dead_letter_window_s`` (per
  runner); the one past the cap is not: the policy trips, the runner stops consuming for
  ``dead_letter_cooldown_s`` (or until restarted), says why in its log and the
  ``chat_function_dead_letter_stopped`` gauge, and every record not yet settled stays
  unacked/uncommitted for the next try. A bad deploy thus costs a bounded number of dead
  letters (replayable), not a whole stream.
- a failure while a dependency the process uses does not answer (Redis failing over or down,
  PostgreSQL restarting) is the infrastructure's, not the records': the segment is held, no
  attempt counted, no bisection, and run again after a backoff once the dependencies answer.
  An outage of any length thus dead-letters nothing; a record that fails while everything
  answers is charged as above.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from chat import dead_letters
from functions.batch import BatchResult, KafkaRecord, Record
from functions.deps import Deps
from functions.forwarding import OutRecord
from functions.runtime import metrics
from functions.runtime.invoke import TransientFailure, backoff_s, pause
from functions.triggers import KafkaTopic, RedisStream

log = logging.getLogger("functions.policy")

R = TypeVar("R", bound=Record)

# The error a record carries when the handler named it ``failed`` without saying why.
REPORTED_FAILED = "the handler reported the record as failed"


@dataclass(frozen=True, slots=True)
class Limits:
    """The policy's settings, read from a trigger."""

    max_attempts: int
    dead_letter_cap: int
    dead_letter_window_s: float
    dead_letter_cooldown_s: float

    @classmethod
    def of(cls, trigger: RedisStream | KafkaTopic) -> Limits:
        """The policy settings a stream or topic trigger declares."""
        return cls(
            max_attempts=trigger.max_attempts,
            dead_letter_cap=trigger.dead_letter_cap,
            dead_letter_window_s=trigger.dead_letter_window_s,
            dead_letter_cooldown_s=trigger.dead_letter_cooldown_s,
        )


class Sink(Protocol[R]):
    """What a trigger does with the policy's verdicts."""

    def owned(self, records: list[R]) -> list[R]:
        """The records still this consumer's to finish (not reclaimed, not revoked)."""

    async def done(self, records: list[R], settle: asyncio.Future[None] | None) -> None:
        """``records`` succeeded (once ``settle`` resolves, when set): ack or commit them."""

    async def dead_letter(self, records: list[R], reasons: dict[str, str]) -> bool:
        """Dead-letter ``records`` exactly once; False when it could not (keep them unfinished)."""

    async def again(self, records: list[R]) -> list[R]:
        """Before a retry: the records still ours, each counting one more attempt."""


class DeadLetterCap:
    """At most ``cap`` dead letters per ``window_s``; past it, tripped for ``cooldown_s``."""

    def __init__(
        self,
        function: str,
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.function = function
        self.limits = limits
        self.clock = clock
        self._times: deque[float] = deque()
        self._resume_at = 0.0
        self.reason = ""

    @property
    def tripped(self) -> bool:
        """True while consuming is stopped; clears itself after the cool-down."""
        if self._resume_at and self.clock() >= self._resume_at:
            self._resume_at = 0.0
            self._times.clear()
            metrics.DEAD_LETTER_STOPPED.labels(self.function).set(0)
            log.warning(
                "%s resumes consuming after its dead-letter cool-down",
                self.function,
                extra={"function": self.function},
            )
        return bool(self._resume_at)

    def remaining_s(self) -> float:
        """Seconds left in the cool-down (0 when not tripped)."""
        return max(0.0, self._resume_at - self.clock()) if self.tripped else 0.0

    def admit(self, count: int) -> int:
        """How many of ``count`` dead letters may be written now; trips when not all may."""
        if self.tripped:
            return 0
        now = self.clock()
        limits = self.limits
        while self._times and self._times[0] <= now - limits.dead_letter_window_s:
            self._times.popleft()
        room = max(0, limits.dead_letter_cap - len(self._times))
        admitted = min(count, room)
        self._times.extend([now] * admitted)
        if admitted < count:
            self._trip(now)
        return admitted

    def _trip(self, now: float) -> None:
        limits = self.limits
        self._resume_at = now + limits.dead_letter_cooldown_s
        self.reason = (
            f"{self.function} dead-lettered {limits.dead_letter_cap} records within "
            f"{limits.dead_letter_window_s:g}s (dead_letter_cap): it stops consuming for "
            f"{limits.dead_letter_cooldown_s:g}s, leaving the rest unacked. Check the handler "
            f"or the last deploy, list the dead letters with "
            f"'python -m functions dead-letters list {self.function}', and restart the host "
            f"to resume sooner."
        )
        metrics.DEAD_LETTER_STOPPED.labels(self.function).set(1)
        metrics.DEAD_LETTER_TRIPS.labels(self.function).inc()
        log.error(self.reason, extra={"function": self.function})


class Policy(Generic[R]):
    """Runs batches of one function through the failure rules above."""

    def __init__(
        self,
        function: str,
        limits: Limits,
        call: Callable[[Sequence[R]], Awaitable[BatchResult]],
        sink: Sink[R],
        stopping: asyncio.Event | None = None,
        cap: DeadLetterCap | None = None,
        deadline: Callable[[], bool] | None = None,
        available: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.function = function
        self.limits = limits
        self.call = call
        self.sink = sink
        self.stopping = stopping or asyncio.Event()
        self.cap = cap or DeadLetterCap(function, limits)
        # True once no further invocation fits (a Lambda nearing its timeout).
        self.deadline = deadline or (lambda: False)
        # Whether the dependencies answer; None: every failure is charged to its records.
        self.available = available
        self._outage_rounds = 0

    def _halt(self) -> bool:
        return self.stopping.is_set() or self.cap.tripped or self.deadline()

    async def run(self, batch: Sequence[R]) -> set[str]:
        """Handle ``batch``; return the ids of records neither done nor dead-lettered here."""
        unfinished = {r.id for r in batch}
        segments: deque[list[R]] = deque([list(batch)])
        while segments and not self._halt():
            segment = segments.popleft()
            if not await self._run_segment(segment, segments, unfinished):
                break
        if self.stopping.is_set():
            # A runner stopped while holding (its partition handed over, its host stopping)
            # waits no more: it leaves the count of waiting runners.
            self._end_outage(answered=False)
        return unfinished

    async def _run_segment(
        self, segment: list[R], segments: deque[list[R]], unfinished: set[str]
    ) -> bool:
        """One invocation over ``segment``; queue what must run again. False: halt."""
        max_attempts = self.limits.max_attempts
        # Records another consumer took over (reclaimed, or their partition revoked) are its
        # to finish; they stay unfinished here, so nothing past them is committed.
        segment = self.sink.owned(segment)
        if not segment:
            return True
        expired = [r for r in segment if r.attempt > max_attempts]
        if expired:
            reasons = {r.id: f"gave up after {r.attempt - 1} deliveries" for r in expired}
            if not await self._bury(expired, reasons, unfinished):
                return False
            segment = [r for r in segment if r.attempt <= max_attempts]
            if not segment:
                return True
        try:
            result = await self.call(segment)
            error = REPORTED_FAILED
        except TransientFailure as exc:
            if await self._in_outage(segment, exc):
                segments.appendleft(segment)
                return not self._halt()
            if len(segment) > 1:
                half = len(segment) // 2
                segments.appendleft(segment[half:])
                segments.appendleft(segment[:half])
                metrics.RECORDS.labels(self.function, "bisected").inc(len(segment))
                log.info(
                    "batch of %d failed (%s); retrying its halves",
                    len(segment),
                    exc,
                    extra={"function": self.function, "batch_size": len(segment)},
                )
                return True
            result = BatchResult(failed={segment[0].id})
            error = str(exc)
        self._end_outage()
        done = [r for r in segment if r.id not in result.failed and r.id not in result.poison]
        if done:
            await self.sink.done(done, result.settle)
            unfinished.difference_update(r.id for r in done)
        poison = [r for r in segment if r.id in result.poison]
        if poison and not await self._bury(poison, result.poison, unfinished):
            return False
        retry = [r for r in segment if r.id in result.failed]
        out = [r for r in retry if r.attempt >= max_attempts]
        if out and not await self._bury(out, {r.id: error for r in out}, unfinished):
            return False
        retry = [r for r in retry if r.attempt < max_attempts]
        if not retry:
            return True
        metrics.RECORDS.labels(self.function, "retried").inc(len(retry))
        await pause(self.stopping, backoff_s(max(r.attempt for r in retry)))
        if self._halt():
            return False
        again = await self.sink.again(retry)
        if again:
            segments.appendleft(again)
        return True

    async def _in_outage(self, segment: list[R], exc: TransientFailure) -> bool:
        """True when a dependency does not answer: ``segment`` waits for it, uncharged."""
        if self.available is None:
            return False
        if await self.available():
            self._end_outage()
            return False
        self._outage_rounds += 1
        if self._outage_rounds == 1:
            metrics.WAITING_FOR_DEPENDENCIES.labels(self.function).inc()
            log.warning(
                "%s holds %d records without counting attempts: a dependency does not "
                "answer (%s); it retries until it does",
                self.function,
                len(segment),
                exc,
                extra={"function": self.function, "batch_size": len(segment)},
            )
        metrics.RECORDS.labels(self.function, "held").inc(len(segment))
        await pause(self.stopping, backoff_s(self._outage_rounds, base=0.25))
        return True

    def _end_outage(self, answered: bool = True) -> None:
        if self._outage_rounds:
            self._outage_rounds = 0
            metrics.WAITING_FOR_DEPENDENCIES.labels(self.function).dec()
            if answered:
                log.warning(
                    "%s: dependencies answer again, records run as usual",
                    self.function,
                    extra={"function": self.function},
                )

    async def _bury(self, records: list[R], reasons: dict[str, str], unfinished: set[str]) -> bool:
        """Dead-letter what the cap admits; False when not all of ``records`` were."""
        admitted = records[: self.cap.admit(len(records))]
        if admitted:
            if not await self.sink.dead_letter(admitted, reasons):
                return False
            unfinished.difference_update(r.id for r in admitted)
            log.warning(
                "dead-lettered %d records: %s",
                len(admitted),
                "; ".join(sorted({reasons.get(r.id, "failed")[:200] for r in admitted}))[:500],
                extra={"function": self.function},
            )
        return len(admitted) == len(records)


def kafka_dead_letters(
    function: str, records: Sequence[KafkaRecord], reasons: dict[str, str]
) -> list[OutRecord]:
    """The dead-letter topic records of ``records``: key, value, and why, how often, where from."""
    return [
        (
            r.key,
            r.value,
            dead_letters.kafka_headers(reasons.get(r.id, "failed"), r.attempt, r.id, function),
        )
        for r in records
    ]


async def produce_dead_letters(
    deps: Deps,
    function: str,
    topic: str | None,
    records: Sequence[KafkaRecord],
    reasons: dict[str, str],
) -> None:
    """Write Kafka dead letters (nothing when the trigger declares no dead-letter topic)."""
    if topic:
        await deps.produce(topic, kafka_dead_letters(function, records, reasons))
    metrics.DEAD_LETTERED.labels(function).inc(len(records))
    metrics.RECORDS.labels(function, "dead_lettered").inc(len(records))
