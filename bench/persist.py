"""Persist throughput: messages/s stored by the persist function, against a row-by-row baseline.

Runs the persist handler over pre-encoded Kafka records (the same bytes the message function
produces) with one consumer per partition (rooms split by key, as Kafka does), and
compares with a naive consumer that inserts one row per transaction. Starts a private
PostgreSQL unless --dsn is given; prints progress; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg

from bench.stack import private_stack
from chat.contract import Message, iso_ms
from chat.ids import message_id
from chat.settings import Settings
from devstack.stack import Stack
from functions import persist
from functions.batch import KafkaRecord
from functions.deps import Deps
from functions.store.migrate import migrate

_WORDS = (
    "deploy", "release", "build", "test", "merge", "review", "ship", "lunch", "coffee",
    "meeting", "standup", "retro", "sprint", "ticket", "bug", "fix", "patch", "rollback",
    "incident", "alert", "pager", "latency", "error", "timeout", "cache", "queue", "kafka",
    "redis", "postgres", "index", "query", "schema", "migration", "throughput", "benchmark",
    "hello", "thanks", "tomorrow", "today", "later", "maybe", "sure", "great", "nice", "done",
    "blocked", "waiting", "ready",
)  # fmt: skip
_encode = msgspec.json.Encoder().encode


@contextmanager
def private_services(components: Sequence[str] = ("postgres",)) -> Iterator[Stack]:
    """A throwaway durable PostgreSQL (and Redis if asked) on free ports, migrated."""
    with private_stack(components, durable=True) as stack:
        migrate(stack.postgres_dsn)
        yield stack


def make_messages(
    count: int,
    *,
    rooms: int,
    users: int,
    start: datetime,
    span: timedelta,
    seed: int = 7,
    room_prefix: str = "bench",
) -> list[Message]:
    """``count`` messages over ``rooms`` rooms, with per-room contiguous seqs, spread over span."""
    rng = random.Random(seed)
    next_seq = [0] * rooms
    # Each room has a few members who do the talking, as in real rooms.
    members = [[rng.randrange(users) for _ in range(rng.randint(2, 30))] for _ in range(rooms)]
    step = span / max(count, 1)
    out: list[Message] = []
    for i in range(count):
        room_index = rng.randrange(rooms)
        next_seq[room_index] += 1
        room = f"{room_prefix}-{room_index}"
        sender = f"user-{rng.choice(members[room_index])}"
        client_msg_id = f"c-{i}"
        ts = iso_ms(start + step * i)
        out.append(
            Message(
                id=message_id(sender, room, client_msg_id),
                room=room,
                seq=next_seq[room_index],
                sender=sender,
                text=" ".join(rng.choices(_WORDS, k=rng.randint(4, 20))),
                client_msg_id=client_msg_id,
                ts=ts,
            )
        )
    return out


def to_partitions(
    messages: Sequence[Message], size: int, partitions: int
) -> list[list[list[KafkaRecord]]]:
    """Kafka records split by room over ``partitions``, in batches of ``size``, as consumed."""
    records: list[list[KafkaRecord]] = [[] for _ in range(partitions)]
    for m in messages:
        # Like the producer's key hashing: a room's messages stay on one partition, in order.
        part = zlib.crc32(m.room.encode()) % partitions
        records[part].append(
            KafkaRecord(
                topic="chat.messages",
                partition=part,
                offset=len(records[part]),
                key=m.room.encode(),
                value=_encode(m),
            )
        )
    return [[recs[i : i + size] for i in range(0, len(recs), size)] for recs in records]


class Progress:
    """Prints a line per interval: messages done and the rate over that interval."""

    def __init__(self, label: str, total: int, every_s: float = 1.0) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.done = 0
        self.rates: list[float] = []
        self._started = self._last_t = time.perf_counter()
        self._last_done = 0

    def add(self, n: int) -> None:
        """Count ``n`` more; print when an interval has passed."""
        self.done += n
        now = time.perf_counter()
        if now - self._last_t >= self.every_s:
            rate = (self.done - self._last_done) / (now - self._last_t)
            self.rates.append(rate)
            print(
                f"  {self.label}: {self.done:>9,}/{self.total:,}  {rate:>9,.0f}/s",
                flush=True,
            )
            self._last_t, self._last_done = now, self.done

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self._started


async def persist_all(
    deps: Deps, partitions: Sequence[Sequence[list[KafkaRecord]]], label: str
) -> tuple[float, list[float]]:
    """One consumer per partition runs the persist handler over its batches; (msg/s, rates)."""
    progress = Progress(label, sum(len(b) for p in partitions for b in p))

    async def consumer(batches: Sequence[list[KafkaRecord]]) -> None:
        for batch in batches:
            result = await persist.handle(batch, deps)
            if not result.clean:
                raise RuntimeError(f"persist reported failures: {result}")
            progress.add(len(batch))

    await asyncio.gather(*(consumer(p) for p in partitions))
    return progress.done / progress.elapsed, progress.rates


def naive_rate(dsn: str, messages: Sequence[Message]) -> float:
    """Messages/s of a consumer that inserts and commits one row at a time."""
    sql = (
        "INSERT INTO messages (id, room, seq, sender, text, client_msg_id, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    )
    progress = Progress("baseline row-by-row", len(messages))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for m in messages:
            conn.execute(sql, (m.id, m.room, m.seq, m.sender, m.text, m.client_msg_id, m.ts))
            progress.add(1)
    return progress.done / progress.elapsed


def count_rows(dsn: str, prefix: str) -> int:
    """Messages stored in the rooms named ``<prefix>-*``."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM messages WHERE room LIKE %s", (prefix + "-%",)
        ).fetchone()
    return int(row[0]) if row else 0


async def load(dsn: str, messages: Sequence[Message], batch: int, partitions: int) -> float:
    """Persist ``messages`` through the persist handler; return messages/s."""
    deps = Deps(Settings.from_env(postgres_dsn=dsn))
    try:
        rate, _ = await persist_all(deps, to_partitions(messages, batch, partitions), "load")
    finally:
        await deps.aclose()
    return rate


async def run(args: argparse.Namespace, dsn: str) -> None:
    """Baseline, then the persist function, then a full redelivery; print the figures."""
    tag = f"bp{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    print(f"generating {args.messages:,} messages in {args.rooms} rooms ...", flush=True)
    messages = make_messages(
        args.messages, rooms=args.rooms, users=args.users, start=now - timedelta(hours=1),
        span=timedelta(hours=1), room_prefix=tag,
    )  # fmt: skip
    baseline = make_messages(
        args.baseline, rooms=args.rooms, users=args.users, start=now - timedelta(hours=1),
        span=timedelta(hours=1), seed=11, room_prefix=tag + "base",
    )  # fmt: skip
    partitions = to_partitions(messages, args.batch, args.partitions)

    print(f"baseline: {args.baseline:,} messages, one INSERT and commit each", flush=True)
    base_rate = await asyncio.to_thread(naive_rate, dsn, baseline)

    deps = Deps(Settings.from_env(postgres_dsn=dsn))
    try:
        print(
            f"persist: batches of {args.batch} from {args.partitions} partitions, "
            "one consumer each",
            flush=True,
        )
        rate, rates = await persist_all(deps, partitions, "persist")
        stored = await asyncio.to_thread(count_rows, dsn, tag)
        print("redelivery: the same batches again (every row already stored)", flush=True)
        again, _ = await persist_all(deps, partitions, "redelivery")
        after = await asyncio.to_thread(count_rows, dsn, tag)
    finally:
        await deps.aclose()

    if stored != args.messages or after != stored:
        raise SystemExit(f"FAILED: stored {stored}, after redelivery {after}, sent {args.messages}")
    steady = rates[1:-1] or rates
    # A run shorter than two seconds has no whole interval to show.
    intervals = (
        f"1-s intervals: min {min(steady):,.0f}, median {statistics.median(steady):,.0f}"
        if steady
        else "shorter than one interval"
    )
    print()
    print(f"baseline row-by-row      {base_rate:>10,.0f} msg/s")
    print(
        f"persist function         {rate:>10,.0f} msg/s  ({rate / base_rate:.1f}x baseline)  "
        + intervals
    )
    print(f"redelivered batches      {again:>10,.0f} msg/s  (rows unchanged: {after:,})")
    target = "met" if rate >= args.target else "NOT met"
    print(f"target {args.target:,} msg/s sustained: {target}")


def main() -> None:
    """Command line: python -m bench.persist [--dsn DSN] [--messages N] ..."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", help="a migrated PostgreSQL to use (default: start a private one)")
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--baseline", type=int, default=5_000, help="messages for the baseline")
    parser.add_argument("--batch", type=int, default=1000, help="records per invocation")
    parser.add_argument(
        "--partitions", type=int, default=3, help="partitions, each with its own consumer"
    )
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--target", type=int, default=20_000, help="msg/s to call the run good")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs", flush=True)
    if args.dsn:
        asyncio.run(run(args, args.dsn))
        return
    with private_services() as stack:
        asyncio.run(run(args, stack.postgres_dsn))


if __name__ == "__main__":
    main()
