"""The HTTP functions on real PostgreSQL and Redis under hostile input: a 4xx, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import msgspec
import psycopg
import pytest

from chat import names
from chat.clients import postgres_pool
from devstack import Stack
from functions import retention
from functions.deps import Deps
from tests.integration.persistence_support import (
    MakeDeps,
    client,
    fetch,
    http_app,
    message,
    store,
)
from tests.support import unique_room


def _bearer(stack: Stack, user: str, **claims: object) -> dict[str, str]:
    token = jwt.encode({"sub": user, **claims}, stack.jwt_secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_room_metadata_is_changed_only_by_its_creator_or_an_admin(
    stack: Stack, deps: Deps
) -> None:
    room = unique_room()
    async with (
        client(http_app("rooms", deps), "ann") as ann,
        client(http_app("rooms", deps), "bob") as bob,
    ):
        created = await ann.put(f"/rooms/{room}", json={"display_name": "Ann's"})
        assert created.status_code == 200 and created.json()["created_by"] == "ann"
        # WHEN another user renames it THEN 403, and nothing changed
        renamed = await bob.put(f"/rooms/{room}", json={"display_name": "Bob's now"})
        assert renamed.status_code == 403 and renamed.json()["error"]["code"] == "forbidden"
        assert (await bob.get(f"/rooms/{room}")).json()["display_name"] == "Ann's"
        assert (await ann.put(f"/rooms/{room}", json={"display_name": "Ours"})).status_code == 200
        admin = await bob.put(
            f"/rooms/{room}",
            json={"display_name": "Moderated"},
            headers=_bearer(stack, "mod", admin=True),
        )
        assert admin.status_code == 200 and admin.json()["display_name"] == "Moderated"
        assert admin.json()["created_by"] == "ann"

        # A room that began with its first message has no creator: nobody claims it by a PUT.
        implicit = unique_room()
        await store(deps, [message(implicit, 1, sender="cy")])
        claimed = await ann.put(f"/rooms/{implicit}", json={"display_name": "Mine"})
        assert claimed.status_code == 403


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[" * 50_000, 413, "payload_too_large"),
        (b"[" * 2000 + b"]" * 2000, 400, "invalid_payload"),
        (b'{"display_name": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "invalid_payload"),
        (b'{"display_name": "\\ud800"}', 400, "invalid_parameter"),
        (b"[]", 400, "invalid_payload"),
        (b"\xff\xfe", 400, "invalid_payload"),
    ],
)
async def test_hostile_room_bodies_get_4xx(deps: Deps, body: bytes, status: int, code: str) -> None:
    async with client(http_app("rooms", deps)) as http:
        r = await http.put(f"/rooms/{unique_room()}", content=body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize("path", ["/rooms/x%0A", "/rooms/x%0A/messages", "/rooms/%ED%A0%80"])
async def test_a_room_with_a_trailing_newline_is_a_400(deps: Deps, path: str) -> None:
    on_rooms = path.count("/") == 2
    async with client(http_app("rooms" if on_rooms else "history", deps)) as http:
        r = await http.put(path, json={}) if on_rooms else await http.get(path)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_room"


@pytest.mark.parametrize(
    "query",
    [
        "until=0001-01-01",
        "since=0001-01-01&until=0001-01-02",
        "since=1969-01-01",
        "until=0000-00-00",
    ],
)
async def test_analytics_dates_out_of_range_are_a_400(deps: Deps, query: str) -> None:
    async with client(http_app("analytics", deps)) as http:
        for path in ("/analytics/active-users", "/analytics/busiest-rooms"):
            r = await http.get(f"{path}?{query}")
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("q", ["-deploy", "-deploy -build", "deploy or -build", '-"a phrase"'])
async def test_a_search_of_exclusions_alone_is_refused(deps: Deps, q: str) -> None:
    room = unique_room()
    await store(deps, [message(room, 1, text="deploy the build")])
    async with client(http_app("search", deps)) as http:
        r = await http.get(f"/rooms/{room}/search", params={"q": q})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter"
        # A word to find with an exclusion beside it is a query like any other.
        fine = await http.get(f"/rooms/{room}/search", params={"q": "deploy -frontend"})
    assert fine.status_code == 200 and [h["seq"] for h in fine.json()["results"]] == [1]


async def test_every_pooled_statement_has_a_timeout(make_deps: MakeDeps) -> None:
    deps = make_deps(postgres_statement_timeout_ms=200)
    pool = postgres_pool(deps.settings)
    await pool.open(wait=True, timeout=15)
    try:
        async with pool.connection() as conn:
            shown = await (await conn.execute("SHOW statement_timeout")).fetchone()
            assert shown == ("200ms",)
            with pytest.raises(psycopg.errors.QueryCanceled):
                await conn.execute("SELECT pg_sleep(2)")
    finally:
        await pool.close()


async def test_each_caller_has_an_http_rate_limit(make_deps: MakeDeps) -> None:
    deps = make_deps(rate_limits="http.user=1:3")
    room = unique_room()
    async with (
        client(http_app("history", deps), f"greedy-{room}") as greedy,
        client(http_app("history", deps)) as other,
    ):
        answers = [await greedy.get(f"/rooms/{room}/messages") for _ in range(6)]
        assert [r.status_code for r in answers[:3]] == [200, 200, 200]
        limited = answers[-1]
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert limited.json()["retry_after_ms"] > 0
        assert int(limited.headers["retry-after"]) >= 1
        # Another caller is not slowed by the greedy one.
        assert (await other.get(f"/rooms/{room}/messages")).status_code == 200


async def test_retention_trims_the_recent_logs_so_history_never_serves_deleted_rows(
    deps: Deps,
) -> None:
    # GIVEN a room whose seqs 1..4 are 10 days old and 5..6 are new, all in the recent log
    room = unique_room()
    old = datetime.now(UTC) - timedelta(days=10)
    msgs = [message(room, s, ts=old) for s in range(1, 5)]
    msgs += [message(room, s) for s in (5, 6)]
    await store(deps, msgs)
    for m in msgs:
        await deps.redis.xadd(
            names.recent_log_key(room), {"m": msgspec.json.encode(m).decode()}, id=f"{m.seq}-0"
        )

    # WHEN retention keeps 7 days
    result = await retention.purge(
        await deps.pool(), retention.cutoff_for(7), batch=3, redis=deps.redis
    )

    # THEN the rows and the recent-log entries of the old messages are gone, the rest stay
    assert result.newest[room] == 4
    entries = await deps.redis.xrange(names.recent_log_key(room))
    assert [e[0] for e in entries] == ["5-0", "6-0"]
    assert await fetch(deps, "SELECT seq FROM messages WHERE room = %s ORDER BY seq", room) == [
        (5,),
        (6,),
    ]
    async with client(http_app("history", deps)) as http:
        page = (await http.get(f"/rooms/{room}/messages")).json()
    assert [m["seq"] for m in page["messages"]] == [5, 6]


async def test_history_skips_recent_log_entries_past_retention(make_deps: MakeDeps) -> None:
    # GIVEN an old message only in the recent log (retention has not run yet)
    deps = make_deps(retention_days=7)
    room = unique_room()
    old = message(room, 1, ts=datetime.now(UTC) - timedelta(days=8))
    new = message(room, 2)
    for m in (old, new):
        await deps.redis.xadd(
            names.recent_log_key(room), {"m": msgspec.json.encode(m).decode()}, id=f"{m.seq}-0"
        )
    async with client(http_app("history", deps)) as http:
        page = (await http.get(f"/rooms/{room}/messages")).json()
    assert [m["seq"] for m in page["messages"]] == [2]
