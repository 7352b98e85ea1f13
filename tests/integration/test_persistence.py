"""The persist function on real PostgreSQL: idempotent batches, poison, metadata, retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from functions import persist, retention
from functions.deps import Deps
from tests.integration.persistence_support import (
    fetch,
    message,
    records,
    store,
)
from tests.support import unique_room


async def _room_rows(deps: Deps, room: str) -> list[tuple[Any, ...]]:
    return await fetch(
        deps,
        "SELECT id::text, seq, sender, text, client_msg_id, created_at, persisted_at"
        " FROM messages WHERE room = %s ORDER BY seq",
        room,
    )


async def test_the_same_batch_persisted_twice_gives_the_same_rows(deps: Deps) -> None:
    # GIVEN a batch of three messages from two senders
    room = unique_room()
    batch = [message(room, 1, "ann", "one"), message(room, 2, "bob", "two"), message(room, 3)]

    # WHEN it is persisted, then redelivered (twice, and once concurrently with itself)
    await store(deps, batch)
    first = await _room_rows(deps, room)
    counts_before = await fetch(deps, "SELECT messages FROM room_daily_stats WHERE room = %s", room)
    await store(deps, batch)
    await asyncio.gather(store(deps, batch), store(deps, batch))

    # THEN the rows, their persisted_at included, and the analytics counters are unchanged
    assert await _room_rows(deps, room) == first
    assert [r[1] for r in first] == [1, 2, 3]
    assert {r[0] for r in first} == {m.id for m in batch}
    counts_after = await fetch(deps, "SELECT messages FROM room_daily_stats WHERE room = %s", room)
    assert counts_after == counts_before == [(3,)]


async def test_metadata_follows_the_stored_messages(deps: Deps) -> None:
    room = unique_room()
    await store(deps, [message(room, 1, "cleo"), message(room, 2, "dan"), message(room, 3, "cleo")])

    assert await fetch(deps, "SELECT name FROM rooms WHERE name = %s", room) == [(room,)]
    members = await fetch(
        deps, "SELECT user_id FROM memberships WHERE room = %s ORDER BY user_id", room
    )
    assert members == [("cleo",), ("dan",)]
    users = await fetch(
        deps, "SELECT id FROM users WHERE id = ANY(%s) ORDER BY id", ["cleo", "dan"]
    )
    assert users == [("cleo",), ("dan",)]


async def test_poison_records_are_reported_and_the_rest_is_stored(deps: Deps) -> None:
    room = unique_room()
    good = message(room, 1)
    bad_room = message("no spaces allowed", 1)
    nul = message(room, 2, text="a\x00b")
    naive = message(room, 3)
    naive_bytes = records([naive])[0].value.replace(b'Z"', b'"')
    batch = records([good, b"{not json", bad_room, nul, naive_bytes, good])

    result = await persist.handle(batch, deps)

    assert set(result.poison) == {batch[i].id for i in (1, 2, 3, 4)}
    assert not result.failed
    assert [r[1] for r in await _room_rows(deps, room)] == [1]


async def test_a_reused_seq_is_dead_lettered_not_dropped(deps: Deps) -> None:
    # GIVEN a stored message at seq 1
    room = unique_room()
    original = message(room, 1, "ann", "original")
    await store(deps, [original])

    # WHEN another message claims the same seq (the sequencer lost its state)
    impostor = message(room, 1, "bob", "impostor")
    batch = records([impostor, message(room, 2, "bob", "fine")])
    result = await persist.handle(batch, deps)

    # THEN it is poison with the reason, the original stays, the rest of the batch is stored
    assert list(result.poison) == [batch[0].id]
    assert "holds another message" in result.poison[batch[0].id]
    rows = await _room_rows(deps, room)
    assert [(r[1], r[3]) for r in rows] == [(1, "original"), (2, "fine")]


async def test_retention_removes_whole_old_days_and_keeps_the_rest(deps: Deps) -> None:
    # Dates long past, so no other test's messages fall before the cutoff used here.
    room = unique_room()
    old = datetime(1975, 3, 1, 12, tzinfo=UTC)
    cutoff = datetime(1975, 3, 3, tzinfo=UTC)
    batch = [
        message(room, seq, f"u{seq % 3}", ts=old + timedelta(hours=6 * seq)) for seq in range(1, 13)
    ]
    await store(deps, batch)
    kept = [m.seq for m in batch if datetime.fromisoformat(m.ts) >= cutoff]
    assert 0 < len(kept) < len(batch)

    # Off by default: nothing goes.
    await retention.run(deps)
    assert len(await _room_rows(deps, room)) == len(batch)

    # Small batches, so the run takes several short transactions.
    result = await retention.purge(await deps.pool(), cutoff, batch=2)

    assert result.finished
    assert result.messages == len(batch) - len(kept)
    assert [r[1] for r in await _room_rows(deps, room)] == kept
    days = await fetch(
        deps, "SELECT day, messages FROM room_daily_stats WHERE room = %s ORDER BY day", room
    )
    assert all(day >= cutoff.date() for day, _ in days)
    assert sum(n for _, n in days) == len(kept)
    stale = await fetch(deps, "SELECT 1 FROM user_daily_activity WHERE day < %s", cutoff.date())
    assert stale == []


def test_retention_cutoff_is_the_start_of_a_utc_day() -> None:
    now = datetime(2026, 5, 10, 23, 30, tzinfo=UTC)
    assert retention.cutoff_for(7, now) == datetime(2026, 5, 3, tzinfo=UTC)
