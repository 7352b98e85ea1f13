"""Realtime gateway bench: idle sockets one node holds, memory per socket, delivery latency.

1. Idle: client processes open --connections WebSockets (Engine.IO v4 + Socket.IO CONNECT, dev
   auth) to one gateway node and hold them; the node's resident memory before and after gives
   the cost per connection.
2. Latency: senders on node 1 send at a steady --rate messages/s in total; each message is timed
   from the send to its arrival at a member on node 2 (across nodes) and back at its sender on
   node 1 (same node). Baseline in the same run: a bare Redis pub/sub round trip at the same rate.

Starts a private stack (2 gateways, 1 function host) unless --endpoints names a running one's
endpoints.json; loopback only; bounded in count and time; prints progress; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from bench.stack import private_stack
from devstack.ports import Ports

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
MAX_CONNECTIONS = 20_000
MAX_RATE = 5_000
# A sender's share of the rate stays under the default per-socket limit (10/s).
PER_SENDER_RATE = 8


def say(line: str) -> None:
    """One progress line."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def raise_fd_limit() -> int:
    """Lift this process's soft open-files limit to the hard one; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def ws_url(base: str) -> str:
    """The Engine.IO WebSocket URL of a gateway's base URL; loopback only."""
    parts = urlsplit(base)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"refusing a non-loopback gateway: {base}")
    return f"ws://{parts.netloc}/socket.io/?EIO=4&transport=websocket"


class RawSocket:
    """A minimal Socket.IO v5 client over one WebSocket: connect, emit with acks, events."""

    def __init__(self, ws: ClientConnection, on_event: Callable[[str, Any], None]) -> None:
        self.ws = ws
        self.on_event = on_event
        self._ids = itertools.count()
        self.acks: dict[int, asyncio.Future[Any]] = {}

    @classmethod
    async def open(
        cls, url: str, user: str, on_event: Callable[[str, Any], None] | None = None
    ) -> RawSocket:
        """Open, handshake and connect the default namespace with dev auth."""
        ws = await connect(
            url, compression=None, ping_interval=None, open_timeout=30, max_size=1 << 20
        )
        opened = await ws.recv()
        if not str(opened).startswith("0"):
            raise RuntimeError(f"unexpected Engine.IO open packet {opened!r}")
        await ws.send("40" + _encode({"user": user}).decode())
        reply = str(await ws.recv())
        if not reply.startswith("40"):
            await ws.close()
            raise RuntimeError(f"connect refused: {reply[:200]}")
        return cls(ws, on_event or (lambda _e, _d: None))

    async def run(self) -> None:
        """Answer pings and dispatch events and acks until the socket closes."""
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                text = frame if isinstance(frame, str) else frame.decode()
                if text == "2":
                    await self.ws.send("3")
                elif text.startswith("42"):
                    event, data = _decode(text[2:])
                    self.on_event(event, data)
                elif text.startswith("43"):
                    bracket = text.index("[")
                    future = self.acks.pop(int(text[2:bracket]), None)
                    if future is not None and not future.done():
                        future.set_result(_decode(text[bracket:])[0])

    async def emit(self, event: str, data: Any) -> asyncio.Future[Any]:
        """Emit with an ack id; the future resolves with the ack."""
        ack_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = future
        await self.ws.send(f"42{ack_id}" + _encode([event, data]).decode())
        return future

    async def call(self, event: str, data: Any, timeout: float = 10) -> Any:
        """Emit and wait for the ack."""
        return await asyncio.wait_for(await self.emit(event, data), timeout)


# ----- idle connections -----


def _idle_worker(url: str, first: int, count: int, pipe: Connection) -> None:
    """A client process: open ``count`` idle sockets, report progress, close on request."""
    raise_fd_limit()
    asyncio.run(_idle_main(url, first, count, pipe))


async def _idle_main(url: str, first: int, count: int, pipe: Connection) -> None:
    sockets: list[RawSocket] = []
    tasks: list[asyncio.Task[None]] = []
    failures = 0
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        nonlocal failures
        async with gate:
            try:
                sock = await RawSocket.open(url, f"idle-{i}")
            except Exception:
                failures += 1
                return
        sockets.append(sock)
        tasks.append(asyncio.create_task(sock.run()))

    opening = [asyncio.create_task(one(i)) for i in range(first, first + count)]
    while not all(t.done() for t in opening):
        pipe.send(("progress", len(sockets), failures))
        await asyncio.sleep(0.5)
    alive = sum(1 for t in tasks if not t.done())
    pipe.send(("open", alive, failures))
    loop = asyncio.get_running_loop()
    # Hold every socket open (answering pings) until the parent says stop.
    await loop.run_in_executor(None, pipe.recv)
    alive = sum(1 for t in tasks if not t.done())
    pipe.send(("held", alive, failures))
    for sock in sockets:
        with contextlib.suppress(Exception):
            await sock.ws.close()
    await asyncio.gather(*tasks, return_exceptions=True)


def rss_kb(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_limit(pid: int) -> int:
    """The soft open-files limit of a process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError(f"no open-files limit for pid {pid}")


def idle_bench(
    base_url: str, pid: int, connections: int, procs: int, hold_s: float
) -> dict[str, Any]:
    """Open ``connections`` idle sockets to one node; measure its memory per socket."""
    url = ws_url(base_url)
    limit = fd_limit(pid)
    if connections + 100 > limit:
        say(f"idle: the gateway's open-files limit is {limit}: capping at {limit - 100} sockets")
        connections = limit - 100
    httpx.get(f"{base_url}/healthz", timeout=5)
    time.sleep(1.0)
    before = rss_kb(pid)
    say(
        f"idle: gateway pid {pid} RSS {before / 1024:.1f} MiB, fd limit {limit}; opening "
        f"{connections} sockets from {procs} client processes"
    )
    ctx = mp.get_context("spawn")
    share = -(-connections // procs)
    workers: list[tuple[Any, Connection]] = []
    for n in range(procs):
        count = min(share, connections - n * share)
        if count <= 0:
            break
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_idle_worker, args=(url, n * share, count, child), daemon=True)
        proc.start()
        workers.append((proc, parent))
    started = time.monotonic()
    status = {id(p): (0, 0, False) for _, p in workers}
    deadline = started + 300
    while not all(done for _, _, done in status.values()) and time.monotonic() < deadline:
        for _, pipe in workers:
            while pipe.poll():
                kind, n_open, failed = pipe.recv()
                status[id(pipe)] = (n_open, failed, kind == "open")
        total = sum(n for n, _, _ in status.values())
        say(
            f"idle: {total}/{connections} open, "
            f"{sum(f for _, f, _ in status.values())} failed, {time.monotonic() - started:.0f}s"
        )
        time.sleep(1.0)
    opened = sum(n for n, _, _ in status.values())
    open_s = time.monotonic() - started
    health = httpx.get(f"{base_url}/healthz", timeout=10).json()
    say(
        f"idle: holding {opened} sockets for {hold_s:.0f}s (the node reports "
        f"{health.get('connections')}); pings keep them alive"
    )
    time.sleep(hold_s)
    after = rss_kb(pid)
    held_by_node = httpx.get(f"{base_url}/healthz", timeout=10).json().get("connections", 0)
    for _, pipe in workers:
        pipe.send("stop")
    held = 0
    for proc, pipe in workers:
        if pipe.poll(60):
            _, n_alive, _ = pipe.recv()
            held += n_alive
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    per_conn = (after - before) * 1024 / max(held_by_node, 1)
    return {
        "requested": connections,
        "opened": opened,
        "held_by_node": held_by_node,
        "held_by_clients": held,
        "open_seconds": round(open_s, 1),
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "bytes_per_connection": round(per_conn),
    }


# ----- latency -----


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def summary(values: list[float]) -> dict[str, float]:
    """Count, p50, p99 and max in milliseconds."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(_pct(values, 0.50), 2),
        "p99_ms": round(_pct(values, 0.99), 2),
        "max_ms": round(max(values) * 1000, 2),
    }


async def pubsub_baseline(redis_url: str, rate: int, seconds: float) -> list[float]:
    """Round trips of a bare Redis PUBLISH to a subscriber, at ``rate`` per second."""
    channel = f"bench:baseline:{uuid.uuid4().hex}"
    pub = aioredis.from_url(redis_url)
    sub = aioredis.from_url(redis_url)
    took: list[float] = []
    try:
        pubsub = sub.pubsub()
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1)

        async def listen() -> None:
            async for item in pubsub.listen():
                if item["type"] == "message":
                    took.append(time.time() - float(item["data"]))

        listener = asyncio.create_task(listen())
        await _paced(rate, seconds, lambda _i: pub.publish(channel, repr(time.time())))
        await asyncio.sleep(0.5)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    finally:
        await pub.aclose()
        await sub.aclose()
    return took


async def _paced(rate: int, seconds: float, action: Callable[[int], Any]) -> int:
    """Call ``action(i)`` at a steady ``rate`` per second for ``seconds``; return the count."""
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        # Catch up to the schedule, so a slow tick never lowers the offered rate.
        due = int(rate * (now - start))
        while sent < due:
            await action(sent)
            sent += 1
        await asyncio.sleep(0.005)
    return sent


async def latency_bench(
    points: dict[str, Any], rate: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """Steady sends on node 1; delivery latency to node 2 (cross) and back to node 1 (same)."""
    urls = [ws_url(u) for u in points["ws_urls"][:2]]
    rooms = max(1, -(-rate // PER_SENDER_RATE))
    run = uuid.uuid4().hex[:8]
    cross: list[float] = []
    same: list[float] = []
    measuring = False

    def recorder(into: list[float], own: str | None) -> Callable[[str, Any], None]:
        def record(event: str, data: Any) -> None:
            if event != "message" or not measuring:
                return
            if own is not None and data.get("sender") != own:
                return
            into.append(time.time() - float(data["text"].split(" ", 1)[0]))

        return record

    say(f"latency: {rooms} rooms, a sender on node 1 and a member on node 2 in each")
    senders: list[RawSocket] = []
    members: list[RawSocket] = []
    readers: list[asyncio.Task[None]] = []
    for r in range(rooms):
        room = f"bench-{run}-{r}"
        user = f"s-{run}-{r}"
        sender = await RawSocket.open(urls[0], user, recorder(same, user))
        member = await RawSocket.open(urls[1], f"m-{run}-{r}", recorder(cross, None))
        senders.append(sender)
        members.append(member)
        readers += [asyncio.create_task(sender.run()), asyncio.create_task(member.run())]
        for sock in (sender, member):
            ack = await sock.call("join", {"room": room})
            if not ack.get("ok"):
                raise RuntimeError(f"join refused: {ack}")
    rejected: dict[str, int] = {}
    pending: list[asyncio.Future[Any]] = []
    rooms_of = [f"bench-{run}-{r}" for r in range(rooms)]

    phase = itertools.count()

    async def send(i: int) -> None:
        r = i % rooms
        # Unique per send across phases: a repeated id would be deduplicated, not delivered.
        payload = {
            "room": rooms_of[r],
            "text": f"{time.time():.6f} hello",
            "client_msg_id": f"{next(phase)}",
        }
        pending.append(await senders[r].emit("send", payload))

    say(f"latency: warming up {warmup:.0f}s at {rate} msg/s")
    await _paced(rate, warmup, send)
    measuring = True
    say(f"latency: measuring {seconds:.0f}s at {rate} msg/s")
    started = time.monotonic()
    progress = asyncio.create_task(_report(lambda: len(cross), started))
    sent = await _paced(rate, seconds, send)
    elapsed = time.monotonic() - started
    measuring_end = time.monotonic()
    # Let the tail arrive, bounded.
    while len(cross) < sent and time.monotonic() - measuring_end < 10:
        await asyncio.sleep(0.1)
    measuring = False
    progress.cancel()
    for future in pending:
        if future.done():
            ack = future.result()
            if not ack.get("ok"):
                code = ack["error"]["code"]
                rejected[code] = rejected.get(code, 0) + 1
    for sock in senders + members:
        with contextlib.suppress(Exception):
            await sock.ws.close()
    await asyncio.gather(*readers, return_exceptions=True)
    accepted = sum(1 for f in pending if f.done() and f.result().get("ok"))
    lag = await asyncio.to_thread(persistence_lag, points["postgres_dsn"], run, accepted)
    return {
        "rooms": rooms,
        "persistence_lag": lag,
        "sent": sent,
        "offered_rate": round(sent / elapsed),
        "delivered_cross_node": len(cross),
        "rejected": rejected,
        "cross_node": summary(cross),
        "same_node": summary(same),
    }


def persistence_lag(dsn: str, run: str, accepted: int, wait_s: float = 60) -> dict[str, Any]:
    """From a send's acceptance (its ts) to its row in PostgreSQL, over the run's rooms."""
    import psycopg

    pattern = f"bench-{run}-%"
    deadline = time.monotonic() + wait_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM messages WHERE room LIKE %s", (pattern,))
            stored = int(row.fetchone()[0])  # type: ignore[index]
            if stored >= accepted or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        lags = conn.execute(
            "SELECT extract(epoch FROM persisted_at - created_at) * 1000"
            " FROM messages WHERE room LIKE %s",
            (pattern,),
        ).fetchall()
    values = [float(v[0]) / 1000 for v in lags]
    return {"accepted": accepted, "stored": stored, **summary(values)}


async def _report(count: Callable[[], int], started: float) -> None:
    while True:
        await asyncio.sleep(2)
        say(f"latency: {count()} delivered across nodes in {time.monotonic() - started:.0f}s")


# ----- orchestration -----


def settle(base_url: str, wait_s: float = 90) -> None:
    """Wait until the node has let go of the idle sockets, so latency is not measured on top."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if httpx.get(f"{base_url}/healthz", timeout=10).json().get("connections", 0) == 0:
            break
        time.sleep(1)
    say("idle: the node let go of its sockets; settling 10s before the latency part")
    time.sleep(10)


@contextlib.contextmanager
def bare_socketio() -> Iterator[tuple[str, int]]:
    """A bare Socket.IO server process on a free loopback port: (base URL, pid)."""
    port = Ports.free().entry
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_socketio", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the bare Socket.IO server did not start") from None
                time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(points: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Both parts against ``points``; the figures."""
    results: dict[str, Any] = {}
    if args.connections:
        say("idle baseline: a bare python-socketio server on the gateway's uvicorn options")
        with bare_socketio() as (bare_url, bare_pid):
            bare = idle_bench(bare_url, bare_pid, args.connections, args.client_procs, 5.0)
        say(f"idle baseline: {json.dumps(bare)}")
        pid = points["pids"]["gateway-1"]
        idle = idle_bench(points["ws_urls"][0], pid, args.connections, args.client_procs, args.hold)
        idle["baseline_bare_socketio_bytes_per_connection"] = bare["bytes_per_connection"]
        idle["vs_baseline"] = round(
            idle["bytes_per_connection"] / max(bare["bytes_per_connection"], 1), 2
        )
        results["idle"] = idle
        say(f"idle: {json.dumps(results['idle'])}")
        settle(points["ws_urls"][0])
    if args.rate:

        async def both() -> tuple[list[float], dict[str, Any]]:
            say(f"baseline: Redis pub/sub round trip at {args.rate}/s for 5s")
            base = await pubsub_baseline(points["redis_url"], args.rate, 5.0)
            return base, await latency_bench(points, args.rate, args.seconds, args.warmup)

        baseline, latency = asyncio.run(both())
        latency["baseline_redis_pubsub"] = summary(baseline)
        for kind in ("cross_node", "same_node"):
            got, base = latency[kind], latency["baseline_redis_pubsub"]
            if got.get("n") and base.get("n"):
                latency[f"{kind}_vs_baseline"] = {
                    "p50": round(got["p50_ms"] / max(base["p50_ms"], 0.001), 1),
                    "p99": round(got["p99_ms"] / max(base["p99_ms"], 0.001), 1),
                }
        results["latency"] = latency
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run against a private or given stack, print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.realtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--endpoints", type=Path, help="endpoints.json of a running stack")
    parser.add_argument("--connections", type=int, default=10_000, help="idle sockets (0: skip)")
    parser.add_argument("--client-procs", type=int, default=2, help="processes opening them")
    parser.add_argument("--hold", type=float, default=25.0, help="seconds to hold them open")
    parser.add_argument("--rate", type=int, default=1_000, help="messages/s in total (0: skip)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    args = parser.parse_args(argv)
    if not 0 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be in 0..{MAX_CONNECTIONS}")
    if not 0 <= args.rate <= MAX_RATE:
        parser.error(f"--rate must be in 0..{MAX_RATE}")
    if not 1 <= args.client_procs <= 8 or not 0 < args.seconds <= 300 or not 0 <= args.hold <= 300:
        parser.error("--client-procs 1..8, --seconds 0..300, --hold 0..300")
    say(f"bench.realtime: fd limit of this process {raise_fd_limit()}, {os.cpu_count()} cores")
    if args.endpoints:
        results = run(json.loads(args.endpoints.read_text()), args)
    else:
        with private_stack(gateways=2, function_hosts=1) as stack:
            results = run(stack.endpoints(), args)
    print(json.dumps(results, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
