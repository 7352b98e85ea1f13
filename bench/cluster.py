"""Redis Cluster: what awaiting a replica costs an accepted send, and a primary's failover.

    python -m bench cluster [--sends 3000] [--concurrency 1,50] [--rounds 3]

On a private local cluster (3 primaries, 3 replicas; loopback only) it runs the real send
intake (rate limits charged, then the append to the room's inbound partition):

1. sends/s and latency with ``redis_wait_replicas`` 0 and 1, alternating, ``--rounds`` times,
   at each concurrency (sends in flight at once);
2. a steady intake load while the primary owning the busiest partitions is killed with SIGKILL:
   the longest time no send was acked, how many sends failed (and were retried, as a client
   does), and whether every acked send is in the stream afterwards (acked and lost: must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
import uuid
from collections import Counter

from bench.realtime import say
from bench.stack import private_stack
from chat import names
from chat.clients import redis_client
from chat.ratelimit import RateLimiter
from chat.settings import Settings
from chat.shards import Shards
from devstack import Stack
from devstack.testing import kill_master, redis_master_of
from realtime.intake import SendIntake

# Senders in the failover, one room each.
_LANES = 24


async def _intake_rate(
    settings: Settings, sends: int, concurrency: int
) -> tuple[float, float, float]:
    client = redis_client(settings)
    shards = Shards(settings, client)
    base = f"bench:wait:{uuid.uuid4().hex[:8]}"
    intake = SendIntake(RateLimiter(shards, {}), shards, settings, stream=base)
    latencies: list[float] = []

    async def one(n: int) -> None:
        started = time.perf_counter()
        await intake.accept(f"u{n % 500}", "s", {"room": f"room-{n % 200}", "n": str(n)})
        latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    try:
        for first in range(0, sends, concurrency):
            await asyncio.gather(*(one(n) for n in range(first, min(sends, first + concurrency))))
        took = time.perf_counter() - began
    finally:
        await intake.aclose()
        for p in range(settings.inbound_partitions):
            await client.delete(names.partition(base, p))
        await shards.aclose()
        await client.aclose()
    latencies.sort()
    return (
        sends / took,
        latencies[len(latencies) // 2] * 1e3,
        latencies[int(len(latencies) * 0.99)] * 1e3,
    )


async def wait_cost(settings: Settings, sends: int, levels: list[int], rounds: int) -> None:
    """Sends/s and latency without and with awaiting one replica, alternating."""
    for concurrency in levels:
        figures: dict[int, list[tuple[float, float, float]]] = {0: [], 1: []}
        for r in range(rounds):
            for wait in (0, 1):
                run = dataclasses.replace(settings, redis_wait_replicas=wait)
                figures[wait].append(await _intake_rate(run, sends, concurrency))
                rate, p50, p99 = figures[wait][-1]
                say(
                    f"  round {r + 1}, {concurrency} in flight, WAIT {wait}: {rate:,.0f} sends/s, "
                    f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
                )
        base, waited = figures[0], figures[1]
        ratio = statistics.median(w[0] for w in waited) / statistics.median(b[0] for b in base)
        say(
            f"{concurrency} in flight: WAIT 1 holds {ratio:.2f}x the sends/s of WAIT 0; "
            f"p50 {statistics.median(b[1] for b in base):.2f} -> "
            f"{statistics.median(w[1] for w in waited):.2f} ms, p99 "
            f"{statistics.median(b[2] for b in base):.2f} -> "
            f"{statistics.median(w[2] for w in waited):.2f} ms (medians of {rounds} rounds)"
        )


async def failover(stack: Stack, settings: Settings, seconds: float) -> None:
    """Kill the primary of the first partition under a steady load; count stalls and losses."""
    client = redis_client(settings)
    shards = Shards(settings, client)
    base = f"bench:failover:{uuid.uuid4().hex[:8]}"
    intake = SendIntake(RateLimiter(shards, {}), shards, settings, stream=base)
    acked: dict[str, str] = {}  # n -> its partition stream
    failures = Counter[str]()
    stalls = [0.0] * _LANES  # per lane (one room each): the longest time without an ack
    stop = asyncio.Event()

    async def sender(lane: int) -> None:
        room, n, last = f"room-{lane}", lane, time.monotonic()
        while not stop.is_set():
            try:
                await intake.accept(f"u{lane}", "s", {"room": room, "n": str(n)})
            except Exception as exc:
                failures[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue  # retried, as a client retries with the same client_msg_id
            now = time.monotonic()
            stalls[lane] = max(stalls[lane], now - last)
            last = now
            acked[str(n)] = intake.partition(room)
            n += _LANES
            await asyncio.sleep(0.01)

    victim = redis_master_of(stack, names.partition(base, 0))
    hit = [
        redis_master_of(stack, intake.partition(f"room-{lane}")) == victim for lane in range(_LANES)
    ]
    lanes = [asyncio.create_task(sender(i)) for i in range(_LANES)]
    try:
        await asyncio.sleep(seconds / 3)
        say(f"  {len(acked)} sends acked; killing {victim} (SIGKILL)")
        promoted, took = await asyncio.to_thread(kill_master, stack, victim)
        say(f"  {promoted} serves {victim}'s slots {took:.1f} s after the kill")
        await asyncio.sleep(seconds * 2 / 3)
    finally:
        stop.set()
        await asyncio.gather(*lanes, return_exceptions=True)
        await intake.aclose()
    stored: set[str] = set()
    for p in range(settings.inbound_partitions):
        entries: list[tuple[str, dict[str, str]]] = await client.xrange(  # type: ignore[assignment]
            names.partition(base, p)
        )
        stored |= {fields["n"] for _, fields in entries}
        await client.delete(names.partition(base, p))
    lost = sorted(set(acked) - stored, key=int)
    await shards.aclose()
    await client.aclose()
    on_victim = max((s for s, h in zip(stalls, hit, strict=True) if h), default=0.0)
    elsewhere = max((s for s, h in zip(stalls, hit, strict=True) if not h), default=0.0)
    say(
        f"failover: {len(acked)} sends acked, {sum(failures.values())} attempts failed and were "
        f"retried ({dict(failures)}); longest time without an ack: {on_victim:.1f} s for rooms "
        f"on the killed primary ({sum(hit)} of {_LANES}), {elsewhere:.1f} s for the others; "
        f"acked and lost: {len(lost)}"
    )
    if lost:
        raise SystemExit(f"acked sends lost in the failover: {lost[:20]}")


def main(argv: list[str] | None = None) -> None:
    """Command line: the WAIT cost and a failover on a private local cluster."""
    parser = argparse.ArgumentParser(prog="python -m bench cluster", description=__doc__)
    parser.add_argument("--sends", type=int, default=3000, help="sends per measured run")
    parser.add_argument("--concurrency", default="1,50", help="sends in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per setting")
    parser.add_argument("--failover-s", type=float, default=15.0, help="load around the kill")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    with private_stack(["redis"], redis_mode="cluster") as stack:
        settings = Settings.from_env(stack.env(), environment="test")
        say(f"[1/2] the cost of awaiting a replica ({args.sends} sends per run)")
        asyncio.run(wait_cost(settings, args.sends, levels, args.rounds))
        say(f"[2/2] a primary killed under a steady intake load ({args.failover_s:.0f} s)")
        asyncio.run(
            failover(stack, dataclasses.replace(settings, redis_wait_replicas=1), args.failover_s)
        )


if __name__ == "__main__":
    main()
