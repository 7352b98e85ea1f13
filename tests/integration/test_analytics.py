"""Analytics routes and views on real PostgreSQL match counts computed here from the raw data."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from functions.deps import Deps
from tests.integration.persistence_support import (
    fetch,
    get_error,
    get_json,
    http_app,
    message,
    store,
)
from tests.support import unique_room


async def test_analytics_match_counts_computed_from_the_messages(deps: Deps) -> None:
    # GIVEN random traffic in 4 rooms by 6 users over 5 days of a window no other test uses
    rng = random.Random(5)
    start = date(1990, 1, 1) + timedelta(days=rng.randrange(9000))
    tag = uuid.uuid4().hex[:6]
    rooms = [unique_room("an") for _ in range(4)]
    users = [f"an-{tag}-{i}" for i in range(6)]
    seqs = Counter[str]()
    traffic = []
    for _ in range(300):
        room, user = rng.choice(rooms), rng.choice(users)
        day = start + timedelta(days=rng.randrange(5))
        ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(86400)
        )
        seqs[room] += 1
        traffic.append(message(room, seqs[room], user, "x", ts))
    await store(deps, traffic[:150])
    await store(deps, traffic)  # half of it redelivered: counted once

    per_room_day = Counter((m.room, m.ts[:10]) for m in traffic)
    users_per_day = {
        d: len({m.sender for m in traffic if m.ts[:10] == d}) for d in {m.ts[:10] for m in traffic}
    }
    per_room = Counter(m.room for m in traffic)
    since, until = start.isoformat(), (start + timedelta(days=4)).isoformat()

    # THEN the routes agree with those counts
    for room in rooms:
        body = await get_json(
            http_app("analytics", deps), f"/analytics/rooms/{room}/daily", since=since, until=until
        )
        got = {(room, d["day"]): d["messages"] for d in body["days"]}
        assert got == {k: n for k, n in per_room_day.items() if k[0] == room}
    body = await get_json(
        http_app("analytics", deps), "/analytics/active-users", since=since, until=until
    )
    assert {d["day"]: d["active_users"] for d in body["days"]} == users_per_day
    body = await get_json(
        http_app("analytics", deps), "/analytics/busiest-rooms", since=since, until=until, limit=3
    )
    expected = sorted(per_room.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [(r["room"], r["messages"]) for r in body["rooms"]] == expected

    # AND so do the documented views
    view = await fetch(
        deps,
        "SELECT room, day::text, messages FROM room_messages_per_day WHERE room = ANY(%s)",
        rooms,
    )
    assert {(r, d): n for r, d, n in view} == dict(per_room_day)
    view = await fetch(
        deps,
        "SELECT day::text, active_users FROM active_users_per_day WHERE day BETWEEN %s AND %s",
        start,
        start + timedelta(days=4),
    )
    assert dict(view) == users_per_day


async def test_the_seven_day_view_counts_recent_traffic(deps: Deps) -> None:
    room = unique_room("an7")
    now = datetime.now(UTC)
    await store(deps, [message(room, 1, ts=now), message(room, 2, ts=now - timedelta(days=30))])
    assert await fetch(deps, "SELECT messages FROM busiest_rooms_7d WHERE room = %s", room) == [
        (1,)
    ]


async def test_private_rooms_stay_out_of_the_busiest_list(deps: Deps) -> None:
    day = datetime(1989, 6, 1, tzinfo=UTC)
    secret = f"private:{uuid.uuid4().hex[:8]}"
    await store(deps, [message(secret, s, ts=day) for s in range(1, 4)])
    body = await get_json(
        http_app("analytics", deps),
        "/analytics/busiest-rooms",
        since="1989-06-01",
        until="1989-06-01",
    )
    assert secret not in [r["room"] for r in body["rooms"]]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/analytics/active-users", "since=2024-02-30"),
        ("/analytics/active-users", "since=yesterday"),
        ("/analytics/active-users", "since=2024-01-10&until=2024-01-01"),
        ("/analytics/active-users", "since=2020-01-01&until=2024-01-01"),
        ("/analytics/busiest-rooms", "limit=0"),
        ("/analytics/busiest-rooms", "limit=101"),
        ("/analytics/rooms/a b/daily", ""),
    ],
)
async def test_bad_parameters_answer_400_with_a_code(deps: Deps, path: str, query: str) -> None:
    status, code = await get_error(http_app("analytics", deps), f"{path}?{query}")
    assert (status, code) in {(400, "invalid_parameter"), (400, "invalid_room")}
