"""History page latency on a table of 1,000,000+ messages, against a plain SELECT baseline.

Loads the messages server-side (generate_series, in chunks, with progress), fills each room's
recent log in Redis, then times GET /rooms/{room}/messages through the history app in process
(auth, PostgreSQL keyset page, recent-log merge, JSON) for newest pages, deep before_seq pages
and catch-up pages. The same run times the bare keyset SELECT (the floor) and an OFFSET page
(the naive way to page). Starts a private PostgreSQL and Redis unless --dsn/--redis are given.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import msgspec
import psycopg

from bench.persist import private_services
from chat import names
from chat.settings import Settings
from functions.deps import Deps
from functions.registry import get
from functions.web import function_app

# Text, sender and time derive from the seq, so rows are realistic without a client in the loop.
_LOAD = """
INSERT INTO messages (id, room, seq, sender, text, client_msg_id, created_at)
SELECT gen_random_uuid(), %(prefix)s || (g %% %(rooms)s), g / %(rooms)s + 1,
       'user-' || (g * 7919 %% %(users)s),
       'message ' || g || ' about ' || (ARRAY['deploys','lunch','the release','a bug',
           'coffee','the roadmap'])[1 + g %% 6],
       'c' || g,
       now() - make_interval(secs => (%(total)s - g) * 0.5)
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g
"""


def percentile(samples: list[float], p: float) -> float:
    """The p-th percentile (0..100) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def load(dsn: str, prefix: str, rows: int, rooms: int, users: int, chunk: int = 100_000) -> None:
    """Insert ``rows`` messages over ``rooms`` rooms, ``chunk`` per transaction, with progress."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, rows, chunk):
            stop = min(rows, start + chunk) - 1
            conn.execute(
                _LOAD,
                {"prefix": prefix, "rooms": rooms, "users": users, "total": rows,
                 "start": start, "stop": stop},
            )  # fmt: skip
            done = stop + 1
            rate = done / (time.perf_counter() - started)
            print(f"  loaded {done:>9,}/{rows:,}  ({rate:,.0f} rows/s)", flush=True)
        conn.execute("VACUUM (ANALYZE) messages")


async def fill_recent_logs(deps: Deps, prefix: str, rooms: int, per_room: int, dsn: str) -> None:
    """Each room's newest ``per_room`` messages into its Redis recent log, as the sequencer does."""
    with psycopg.connect(dsn) as conn:
        for r in range(rooms):
            room = f"{prefix}{r}"
            rows = conn.execute(
                "SELECT id::text, seq, sender, text, client_msg_id, created_at FROM messages"
                " WHERE room = %s ORDER BY seq DESC LIMIT %s",
                (room, per_room),
            ).fetchall()
            async with deps.redis.pipeline(transaction=False) as pipe:
                for msg_id, seq, sender, text, cid, ts in reversed(rows):
                    body = {
                        "id": msg_id, "room": room, "seq": seq, "sender": sender, "text": text,
                        "client_msg_id": cid, "ts": ts.isoformat().replace("+00:00", "Z"),
                    }  # fmt: skip
                    await pipe.xadd(
                        names.recent_log_key(room),
                        {"m": msgspec.json.encode(body).decode()},
                        id=f"{seq}-0",
                    )
                await pipe.execute()


async def timed(label: str, n: int, call: Callable[[], Awaitable[None]]) -> list[float]:
    """Latencies (ms) of ``n`` sequential calls, after a short warm-up; prints progress."""
    for _ in range(min(50, n)):
        await call()
    samples: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t) * 1000)
        if (i + 1) % max(1, n // 4) == 0:
            print(f"  {label}: {i + 1:,}/{n:,}", flush=True)
    return samples


async def run(args: argparse.Namespace, dsn: str, redis_url: str) -> None:
    """Load, then time the app and the baselines; print the figures."""
    prefix = f"bh{uuid.uuid4().hex[:6]}-"
    per_room = args.rows // args.rooms
    print(f"loading {args.rows:,} messages into {args.rooms} rooms ({per_room:,} each) ...")
    await asyncio.to_thread(load, dsn, prefix, args.rows, args.rooms, args.users)
    # One caller sends every request: a limit it never reaches keeps the check's cost measured.
    deps = Deps(
        Settings.from_env(
            postgres_dsn=dsn,
            redis_url=redis_url,
            dev_auth=True,
            rate_limits="http.user=1000000:1000000",
        )
    )
    rng = random.Random(3)
    try:
        print("filling the recent logs ...", flush=True)
        await fill_recent_logs(deps, prefix, args.rooms, 200, dsn)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=function_app(get("history"), deps)),
            base_url="http://bench",
            headers={"X-User": "b"},
        )
        raw = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

        def page_params() -> tuple[str, dict[str, int]]:
            room = f"{prefix}{rng.randrange(args.rooms)}"
            kind = rng.random()
            if kind < 0.4:
                return room, {"limit": 50}
            if kind < 0.8:
                return room, {"limit": 50, "before_seq": rng.randrange(2, per_room)}
            return room, {"limit": 50, "after_seq": rng.randrange(0, per_room)}

        async def via_app() -> None:
            room, params = page_params()
            response = await http.get(f"/rooms/{room}/messages", params=params)
            if response.status_code != 200:
                raise RuntimeError(response.text)

        async def plain_select() -> None:
            room = f"{prefix}{rng.randrange(args.rooms)}"
            cur = await raw.execute(
                "SELECT id::text, room, seq, sender, text, client_msg_id, created_at"
                " FROM messages WHERE room = %s AND seq < %s ORDER BY seq DESC LIMIT 50",
                (room, rng.randrange(2, per_room)),
            )
            await cur.fetchall()

        async def offset_page() -> None:
            room = f"{prefix}{rng.randrange(args.rooms)}"
            cur = await raw.execute(
                "SELECT id::text, room, seq, sender, text, client_msg_id, created_at"
                " FROM messages WHERE room = %s ORDER BY seq DESC OFFSET %s LIMIT 50",
                (room, rng.randrange(0, per_room - 50)),
            )
            await cur.fetchall()

        app_ms = await timed("history app", args.requests, via_app)
        select_ms = await timed("plain keyset SELECT", args.requests, plain_select)
        offset_ms = await timed("OFFSET page", max(200, args.requests // 5), offset_page)
        await http.aclose()
        await raw.close()
    finally:
        await deps.aclose()

    def line(label: str, s: list[float]) -> str:
        return (
            f"{label:<28} p50 {statistics.median(s):6.2f} ms  p95 {percentile(s, 95):6.2f} ms"
            f"  p99 {percentile(s, 99):6.2f} ms  ({len(s):,} requests)"
        )

    print()
    print(f"table: {args.rows:,} messages, {args.rooms} rooms; pages of 50")
    print(line("history app (HTTP, merged)", app_ms))
    print(line("baseline: keyset SELECT", select_ms))
    print(line("naive: OFFSET page", offset_ms))
    p99 = percentile(app_ms, 99)
    print(
        f"app p99 / SELECT p99 = {p99 / percentile(select_ms, 99):.1f}x; "
        f"OFFSET p99 / app p99 = {percentile(offset_ms, 99) / p99:.1f}x"
    )
    print(f"target p99 < {args.target_ms} ms: {'met' if p99 < args.target_ms else 'NOT met'}")


def main() -> None:
    """Command line: python -m bench.history [--dsn DSN --redis URL] [--rows N] ..."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", help="a migrated PostgreSQL (default: start a private one)")
    parser.add_argument("--redis", help="Redis URL, with --dsn")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--target-ms", type=float, default=20.0)
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
