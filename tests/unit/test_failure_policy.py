"""The failure policy on in-memory fakes: bisection, retries, dead letters once, the cap."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from chat.settings import Settings
from functions.batch import BatchResult, KafkaRecord
from functions.deps import Deps
from functions.runtime.invoke import TransientFailure
from functions.runtime.kafka_topic import commit_points
from functions.runtime.policy import DeadLetterCap, Limits, Policy

pytestmark = pytest.mark.timeout(30)

LIMITS = Limits(
    max_attempts=3, dead_letter_cap=100, dead_letter_window_s=60, dead_letter_cooldown_s=300
)


def _records(count: int, partition: int = 0) -> list[KafkaRecord]:
    return [
        KafkaRecord(topic="t", partition=partition, offset=i, key=None, value=str(i).encode())
        for i in range(count)
    ]


class Handler:
    """Raises on any batch holding a ``crash`` record; reports ``poison``/``flaky`` ones."""

    def __init__(
        self,
        crash: set[int] = frozenset(),  # type: ignore[assignment]
        poison: set[int] = frozenset(),  # type: ignore[assignment]
        flaky: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.crash, self.poison, self.flaky = crash, poison, flaky
        self.calls: list[list[int]] = []
        self.processed: list[int] = []

    async def __call__(self, batch: Sequence[KafkaRecord]) -> BatchResult:
        self.calls.append([r.offset for r in batch])
        if any(r.offset in self.crash for r in batch):
            raise TransientFailure("boom")
        result = BatchResult()
        for r in batch:
            if r.offset in self.poison:
                result.poison[r.id] = f"bad {r.offset}"
            elif r.offset in self.flaky and r.attempt < 2:
                result.failed.add(r.id)
            else:
                self.processed.append(r.offset)
        return result


class Sink:
    """Records what the policy decided."""

    def __init__(self, refuse_dead_letters: bool = False) -> None:
        self.finished: list[int] = []
        self.dead: list[tuple[int, str, int]] = []
        self.refuse = refuse_dead_letters

    def owned(self, records: list[KafkaRecord]) -> list[KafkaRecord]:
        return records

    async def done(self, records: list[KafkaRecord], settle: asyncio.Future[None] | None) -> None:
        self.finished += [r.offset for r in records]

    async def dead_letter(self, records: list[KafkaRecord], reasons: dict[str, str]) -> bool:
        if self.refuse:
            return False
        self.dead += [(r.offset, reasons[r.id], r.attempt) for r in records]
        return True

    async def again(self, records: list[KafkaRecord]) -> list[KafkaRecord]:
        return [dataclasses.replace(r, attempt=r.attempt + 1) for r in records]


def _run(
    handler: Handler,
    batch: list[KafkaRecord],
    sink: Sink | None = None,
    limits: Limits = LIMITS,
    cap: DeadLetterCap | None = None,
    available: Outage | None = None,
) -> tuple[set[str], Sink]:
    sink = sink or Sink()
    policy: Policy[KafkaRecord] = Policy("fn", limits, handler, sink, cap=cap, available=available)
    return asyncio.run(policy.run(batch)), sink


def _waiting(function: str) -> float:
    value = REGISTRY.get_sample_value(
        "chat_function_waiting_for_dependencies", {"function": function}
    )
    return value or 0.0


class Outage:
    """Dependencies that do not answer for the first ``rounds`` probes, and a handler that
    fails on every batch while they do not."""

    def __init__(self, rounds: int, crash: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.rounds = rounds
        self.probes = 0
        self.handler = Handler(crash=crash)

    async def __call__(self) -> bool:
        self.probes += 1
        return self.probes > self.rounds

    async def call(self, batch: Sequence[KafkaRecord]) -> BatchResult:
        if self.probes < self.rounds:
            self.handler.calls.append([r.offset for r in batch])
            raise TransientFailure("ConnectionError: Connection refused")
        return await self.handler(batch)


def test_a_crashing_record_is_bisected_out_and_alone_dead_lettered() -> None:
    # GIVEN 50 records, one of which makes the handler raise
    handler = Handler(crash={37})
    batch = _records(50)
    # WHEN the policy runs them
    unfinished, sink = _run(handler, batch)
    # THEN only that record is dead-lettered, after max_attempts tries alone
    assert sink.dead == [(37, "boom", 3)]
    assert handler.calls.count([37]) == 3
    # AND the 49 others were processed exactly once each, in order, and are done
    assert handler.processed == [i for i in range(50) if i != 37]
    assert sorted(sink.finished) == handler.processed
    assert unfinished == set()
    # AND bisection needs about log2(50) splits, not one call per record
    assert len(handler.calls) <= 2 * 6 + 3 + 1


def test_poison_is_dead_lettered_at_once_and_failed_records_retried() -> None:
    handler = Handler(poison={2}, flaky={4})
    unfinished, sink = _run(handler, _records(6))
    assert sink.dead == [(2, "bad 2", 1)]
    assert handler.calls == [[0, 1, 2, 3, 4, 5], [4]]
    assert sorted(sink.finished) == [0, 1, 3, 4, 5]
    assert unfinished == set()


def test_a_record_delivered_too_often_is_dead_lettered_unrun() -> None:
    handler = Handler()
    batch = [dataclasses.replace(r, attempt=4) if r.offset == 1 else r for r in _records(3)]
    unfinished, sink = _run(handler, batch)
    assert sink.dead == [(1, "gave up after 3 deliveries", 4)]
    assert handler.calls == [[0, 2]]
    assert unfinished == set()


def test_the_cap_stops_after_its_limit_and_leaves_the_rest_unfinished() -> None:
    # GIVEN a bad deploy: every record poison, and a cap of 5 dead letters per minute
    limits = dataclasses.replace(LIMITS, dead_letter_cap=5)
    now = [1000.0]
    cap = DeadLetterCap("fn", limits, clock=lambda: now[0])
    handler = Handler(poison=set(range(20)))
    # WHEN a batch of 20 runs
    unfinished, sink = _run(handler, _records(20), limits=limits, cap=cap)
    # THEN 5 are dead-lettered, the cap trips, and 15 are left for later, not buried
    assert [d[0] for d in sink.dead] == [0, 1, 2, 3, 4]
    assert cap.tripped
    assert "dead_letter_cap" in cap.reason and "dead-letters list fn" in cap.reason
    assert len(unfinished) == 15
    # AND the first unfinished record is where the partition's commit stops
    assert commit_points(_records(20), unfinished) == {("t", 0): 5}
    # AND a tripped policy runs nothing until its cool-down is over
    again, _ = _run(handler, _records(3), limits=limits, cap=cap)
    assert len(again) == 3 and len(handler.calls) == 1
    now[0] += limits.dead_letter_cooldown_s
    assert not cap.tripped and cap.admit(5) == 5


def test_the_cap_counts_within_its_window_only() -> None:
    limits = dataclasses.replace(LIMITS, dead_letter_cap=3, dead_letter_window_s=10)
    now = [0.0]
    cap = DeadLetterCap("fn", limits, clock=lambda: now[0])
    assert cap.admit(2) == 2
    now[0] = 11.0
    assert cap.admit(3) == 3 and not cap.tripped
    assert cap.admit(1) == 0 and cap.tripped


def test_a_dead_letter_that_cannot_be_written_keeps_its_record_unfinished() -> None:
    handler = Handler(poison={1})
    unfinished, _ = _run(handler, _records(4), sink=Sink(refuse_dead_letters=True))
    # The batch's good records are done; the poison one stays, so nothing commits past it.
    assert unfinished == {"t/0/1"}
    assert commit_points(_records(4), unfinished) == {("t", 0): 1}


def test_a_failing_record_never_lets_a_later_offset_commit_before_it() -> None:
    # Two partitions; a crash in partition 1 while stopping mid-way leaves it unfinished.
    handler = Handler(crash={3})
    batch = _records(4, partition=0) + _records(4, partition=1)
    stopping = asyncio.Event()

    async def run() -> set[str]:
        async def call(records: Sequence[KafkaRecord]) -> BatchResult:
            if len(records) == 1 and records[0].offset == 3:
                stopping.set()  # a stop arrives while the lone record fails
            return await handler(records)

        policy: Policy[KafkaRecord] = Policy("fn", LIMITS, call, Sink(), stopping)
        return await policy.run(batch)

    unfinished = asyncio.run(run())
    assert "t/0/3" in unfinished
    points = commit_points(batch, unfinished)
    assert points[("t", 0)] == 3


def test_an_outage_longer_than_every_attempt_dead_letters_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("functions.runtime.policy.backoff_s", lambda *_a, **_k: 0.0)
    # GIVEN dependencies that stop answering for 20 rounds, far more than max_attempts (3)
    outage = Outage(rounds=20)
    batch = _records(8)
    # WHEN the policy runs a batch the handler fails on while they do not answer
    sink = Sink()
    policy: Policy[KafkaRecord] = Policy("fn", LIMITS, outage.call, sink, available=outage)
    unfinished = asyncio.run(policy.run(batch))
    # THEN nothing is dead-lettered and no attempt was counted: every record ran once, whole
    assert sink.dead == []
    assert outage.handler.processed == list(range(8))
    assert sorted(sink.finished) == list(range(8))
    assert unfinished == set()
    # AND the batch was held whole (never bisected) until the dependencies answered
    assert all(call == list(range(8)) for call in outage.handler.calls)
    assert outage.probes == 20
    # AND no runner counts as waiting any more
    assert _waiting("fn") == 0


def test_a_record_failing_while_everything_answers_is_still_charged() -> None:
    # GIVEN dependencies that answer, and a record the handler crashes on
    outage = Outage(rounds=0, crash={3})
    # WHEN the policy runs it
    unfinished, sink = _run(outage.handler, _records(5), available=outage)
    # THEN it is bisected out and dead-lettered after max_attempts, the others done
    assert sink.dead == [(3, "boom", 3)]
    assert sorted(sink.finished) == [0, 1, 2, 4]
    assert unfinished == set()


def test_a_stop_during_an_outage_leaves_the_batch_unfinished() -> None:
    # GIVEN dependencies that never answer
    outage = Outage(rounds=10**9)
    sink = Sink()
    stopping = asyncio.Event()

    async def run() -> set[str]:
        policy: Policy[KafkaRecord] = Policy(
            "fn", LIMITS, outage.call, sink, stopping, available=outage
        )
        task = asyncio.create_task(policy.run(_records(4)))
        await asyncio.sleep(0.3)
        # WHEN the runner is stopped
        stopping.set()
        return await task

    unfinished = asyncio.run(run())
    # THEN every record stays unfinished for the next owner, none dead-lettered
    assert unfinished == {r.id for r in _records(4)}
    assert sink.dead == [] and sink.finished == []
    # AND the stopped runner no longer counts as waiting
    assert _waiting("fn") == 0


def test_only_the_dependencies_a_process_used_are_blamed_for_a_failure() -> None:
    # GIVEN a process whose Redis and PostgreSQL do not answer (nothing listens on port 1)
    settings = Settings(
        environment="test",
        redis_url="redis://127.0.0.1:1/0",
        postgres_dsn="postgresql://chat@127.0.0.1:1/chat",
    )

    async def run() -> tuple[bool, bool, bool]:
        deps = Deps(settings)
        try:
            # WHEN only its health check has probed them, nothing is blamed ...
            health = await deps.check(timeout_s=0.5)
            untouched = await deps.available(timeout_s=0.5)
            # ... and once a handler used Redis, Redis is
            deps.redis  # noqa: B018
            after_use = await deps.available(timeout_s=0.5)
            return "ok" in health.values(), untouched, after_use
        finally:
            await deps.aclose()

    health_ok, untouched, after_use = asyncio.run(run())
    # THEN the probes failed, the unused dependencies held nothing, the used one does
    assert not health_ok
    assert untouched is True
    assert after_use is False
