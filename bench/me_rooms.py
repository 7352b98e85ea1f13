"""GET /me/rooms for one user in 10,000 rooms: unread counts of every room in one request.

Loads ``--rooms`` rooms of ``--per-room`` messages each (server-side, generate_series), makes
one user a member of all of them with a read position: most rooms read to the end (nothing to
count), ``--unread-share`` of them with ``--unread`` messages after the position, some of
those the user's own or deleted. Then times GET /me/rooms through the history app in process
(auth, the query, JSON) and checks one room's count against a direct count. Starts a private
PostgreSQL and Redis unless --dsn/--redis are given.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import httpx
import psycopg

from bench.history import percentile
from bench.persist import private_services
from chat.settings import Settings
from functions.deps import Deps
from functions.registry import get
from functions.store.history import MY_ROOMS
from functions.web import function_app

_LOAD = """
INSERT INTO rooms (name, last_seq)
SELECT %(prefix)s || r, %(per_room)s FROM generate_series(0, %(rooms)s - 1) AS r;
INSERT INTO messages (id, room, seq, sender, text, client_msg_id, created_at, deleted)
SELECT gen_random_uuid(), %(prefix)s || r, s,
       CASE WHEN s %% 7 = 0 THEN %(user)s ELSE 'user-' || (s %% 13) END,
       'message ' || s, 'c' || s, now(), s %% 11 = 0
FROM generate_series(0, %(rooms)s - 1) AS r, generate_series(1, %(per_room)s) AS s;
INSERT INTO users (id) VALUES (%(user)s) ON CONFLICT DO NOTHING;
INSERT INTO memberships (room, user_id, last_read_seq)
SELECT %(prefix)s || r, %(user)s,
       CASE WHEN r %% 100 < %(unread_pct)s THEN %(per_room)s - %(unread)s ELSE %(per_room)s END
FROM generate_series(0, %(rooms)s - 1) AS r;
ANALYZE messages; ANALYZE memberships; ANALYZE rooms;
"""


async def run(args: argparse.Namespace, dsn: str, redis_url: str) -> None:
    """Load, then time GET /me/rooms; print the figures."""
    prefix = f"me{uuid.uuid4().hex[:6]}-"
    user = f"reader-{prefix}"
    print(
        f"loading {args.rooms:,} rooms x {args.per_room} messages, one member of all ...",
        flush=True,
    )
    params = {
        "prefix": prefix,
        "user": user,
        "rooms": args.rooms,
        "per_room": args.per_room,
        "unread": args.unread,
        "unread_pct": round(args.unread_share * 100),
    }
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in filter(str.strip, _LOAD.split(";")):
            conn.execute(statement, {k: v for k, v in params.items() if f"%({k})s" in statement})
    print(f"  loaded in {time.perf_counter() - started:.1f}s", flush=True)
    deps = Deps(
        Settings.from_env(
            postgres_dsn=dsn,
            redis_url=redis_url,
            dev_auth=True,
            rate_limits="http.user=1000000:1000000",
        )
    )
    samples: list[float] = []
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=function_app(get("history"), deps)),
            base_url="http://bench",
            headers={"X-User": user},
            timeout=60,
        ) as http:
            body = None
            for i in range(args.requests):
                t0 = time.perf_counter()
                response = await http.get("/me/rooms")
                samples.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(response.text)
                body = response.json()
                if (i + 1) % max(1, args.requests // 4) == 0:
                    print(f"  GET /me/rooms: {i + 1}/{args.requests}", flush=True)
        assert body is not None
        rooms = body["rooms"]
        unread_rooms = [r for r in rooms if r["unread"]]
        with psycopg.connect(dsn) as conn:
            sample = unread_rooms[0]
            row = conn.execute(
                "SELECT count(*) FROM messages WHERE room = %s AND seq > %s"
                " AND sender <> %s AND NOT deleted",
                (sample["room"], sample["last_read_seq"], user),
            ).fetchone()
            assert row is not None and row[0] == sample["unread"], (row, sample)
        with psycopg.connect(dsn) as conn:
            conn.execute("SET jit = off")
            query: list[float] = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                conn.execute(MY_ROOMS, (user,)).fetchall()
                query.append((time.perf_counter() - t0) * 1000)
    finally:
        await deps.aclose()
    print()
    print(
        f"GET /me/rooms, {len(rooms):,} rooms ({len(unread_rooms):,} with unread messages,"
        f" {sum(r['unread'] for r in rooms):,} unread in all):"
    )
    print(
        f"  p50 {statistics.median(samples):.1f} ms  p95 {percentile(samples, 95):.1f} ms"
        f"  max {max(samples):.1f} ms  ({len(samples)} requests)"
    )
    print(f"  of which the query alone: p50 {statistics.median(query):.1f} ms")


def main() -> None:
    """Command line: python -m bench.me_rooms [--dsn DSN --redis URL] [--rooms N] ..."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", help="a migrated PostgreSQL (default: start a private one)")
    parser.add_argument("--redis", help="Redis URL, with --dsn")
    parser.add_argument("--rooms", type=int, default=10_000)
    parser.add_argument("--per-room", type=int, default=50)
    parser.add_argument("--unread", type=int, default=20, help="messages after the position")
    parser.add_argument("--unread-share", type=float, default=0.1, help="rooms with unread")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    if args.dsn:
        if not args.redis:
            parser.error("--redis is needed with --dsn")
        asyncio.run(run(args, args.dsn, args.redis))
        return
    with private_services(("redis", "postgres")) as stack:
        asyncio.run(run(args, stack.postgres_dsn, stack.redis_url))


if __name__ == "__main__":
    main()
