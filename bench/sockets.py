"""Memory per idle Socket.IO socket: one gateway node beside a bare python-socketio server.

``python -m bench sockets [--count 10000]`` starts a private Redis and one gateway process as the
local stack runs it (``python -m realtime`` with the stack's settings), then, in the same run, a
bare python-socketio server on the gateway's uvicorn options (``bench.bare_socketio``). Against
each in turn, client processes open ``--count`` idle sockets over WebSocket and hold them: each
does the Engine.IO v4 open and the Socket.IO CONNECT (dev auth, a user of its own) by hand, then
joins one room of ``--room-size`` sockets, as the chat page does right after it connects, and
from then on only answers Engine.IO pings. The server's resident memory before (with a warm-up
batch already held, so one-time costs are not counted) and after, divided by the sockets it
reports holding, is the cost of one idle socket. ``--trace`` runs both servers under tracemalloc
instead and prints where the bytes go, grouped by file and line.

Loopback only; bounded in count and time; prints progress; stops what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from bench.realtime import raise_fd_limit, rss_kb, say
from devstack.ports import Ports
from devstack.process import spawn, start_time, tail, terminate
from devstack.stack import Stack

MAX_COUNT = 15_000
# Sockets held before the "before" reading: imports, caches and pools warm up on them.
_WARMUP = 200
# Handshakes in flight per client process.
_OPENING = 100
_OPEN_TIMEOUT_S = 300.0
_HOST = "127.0.0.1"
_TRACE_FILE_ENV = "BENCH_SOCKETS_TRACE_FILE"


# ----- a cheap client: one asyncio protocol per socket, no task, no buffers kept -----


def _client_frame(text: str) -> bytes:
    """A masked WebSocket text frame (client to server frames must be masked)."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


class _IdleSocket(asyncio.Protocol):
    """Upgrade, Engine.IO open, Socket.IO CONNECT, ``join``; then answer pings until closed."""

    def __init__(self, host: str, port: int, user: str, room: str) -> None:
        self.request = (
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.user, self.room = user, room
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"closed before joining ({exc or 'by the server'})")

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.close()

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(_client_frame(text))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._fail(f"upgrade refused: {buffer[:80]!r}")
                return
            self.upgraded, buffer = True, buffer[end + 4 :]
        while len(buffer) >= 2:
            opcode, n = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if n == 126:
                start, n = 4, int.from_bytes(buffer[2:4], "big")
            elif n == 127:
                start, n = 10, int.from_bytes(buffer[2:10], "big")
            if len(buffer) < start + n:
                break
            payload, buffer = buffer[start : start + n], buffer[start + n :]
            if opcode == 0x1:
                self._packet(payload.decode())
            elif opcode == 0x8:
                self._fail("closed by the server")
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(b"\x8a\x80" + os.urandom(4))  # an empty pong
        self.buffer = buffer

    def _packet(self, text: str) -> None:
        if text == "2":
            self.send("3")  # Engine.IO ping -> pong
        elif text.startswith("0"):
            self.send("40" + json.dumps({"user": self.user}))
        elif text.startswith("40"):
            self.send("420" + json.dumps(["join", {"room": self.room}]))
        elif text.startswith("44"):
            self._fail(f"connect refused: {text[:200]}")
        elif text.startswith("430"):
            ack = json.loads(text[3:])[0]
            if ack.get("ok"):
                if not self.ready.done():
                    self.ready.set_result(None)
            else:
                self._fail(f"join refused: {text[:200]}")


def _client_worker(port: int, prefix: str, first: int, room_size: int, pipe: Connection) -> None:
    """A client process: open the sockets the parent asks for, report progress, close at stop."""
    raise_fd_limit()
    asyncio.run(_client_main(port, prefix, first, room_size, pipe))


async def _client_main(
    port: int, prefix: str, first: int, room_size: int, pipe: Connection
) -> None:
    loop = asyncio.get_running_loop()
    sockets: list[_IdleSocket] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(_OPENING)

    async def one(i: int) -> None:
        async with gate:
            sock = _IdleSocket(_HOST, port, f"{prefix}-{i}", f"{prefix}-room-{i // room_size}")
            try:
                await loop.create_connection(lambda: sock, _HOST, port)
                await asyncio.wait_for(sock.ready, 60)
            except Exception as exc:
                failures.append(str(exc)[:200])
                if sock.transport is not None:
                    sock.transport.close()
                return
            sockets.append(sock)

    pipe.send("started")
    while True:
        # Each batch is one message from the parent: how many more sockets to open.
        more = await loop.run_in_executor(None, pipe.recv)
        if more == "stop":
            break
        opening = [asyncio.create_task(one(i)) for i in range(first, first + more)]
        first += more
        while not all(t.done() for t in opening):
            pipe.send(("progress", len(sockets), len(failures)))
            await asyncio.sleep(0.5)
        alive = sum(1 for s in sockets if not s.closed)
        pipe.send(("open", alive, len(failures), failures[:3]))
    alive = sum(1 for s in sockets if not s.closed)
    pipe.send(("held", alive, len(failures), failures[:3]))
    for sock in sockets:
        if sock.transport is not None:
            sock.transport.close()
    await asyncio.sleep(0.5)


class _Clients:
    """Client processes sharing the sockets to open against one server."""

    def __init__(self, port: int, prefix: str, procs: int, room_size: int) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.pipes: list[Connection] = []
        for n in range(procs):
            parent, child = ctx.Pipe()
            # Far apart starting indexes: users and rooms never collide between processes.
            first = n * 1_000_000
            proc = ctx.Process(
                target=_client_worker,
                args=(port, prefix, first, room_size, child),
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
            self.pipes.append(parent)
        for pipe in self.pipes:
            if not pipe.poll(60) or pipe.recv() != "started":
                raise RuntimeError("a client process did not start")

    async def open(self, count: int, what: str, progress: Callable[[str], None]) -> int:
        """Open ``count`` more sockets over the processes; return how many are held in all."""
        share = -(-count // len(self.pipes))
        for n, pipe in enumerate(self.pipes):
            pipe.send(max(0, min(share, count - n * share)))
        status: dict[int, tuple[int, int, bool]] = {
            n: (0, 0, False) for n in range(len(self.pipes))
        }
        errors: list[str] = []
        started = time.monotonic()
        last = 0.0
        while not all(done for _, _, done in status.values()):
            if time.monotonic() - started > _OPEN_TIMEOUT_S:
                raise RuntimeError(
                    f"{what}: sockets still opening after {_OPEN_TIMEOUT_S:.0f}s; "
                    "try a smaller --count"
                )
            for n, pipe in enumerate(self.pipes):
                while pipe.poll():
                    report = pipe.recv()
                    status[n] = (report[1], report[2], report[0] == "open")
                    if report[0] == "open":
                        errors += report[3]
            if time.monotonic() - last >= 2:
                last = time.monotonic()
                opened = sum(s[0] for s in status.values())
                failed = sum(s[1] for s in status.values())
                progress(f"{what}: {opened} open, {failed} failed, {last - started:.0f}s")
            await asyncio.sleep(0.2)
        failed = sum(s[1] for s in status.values())
        if failed:
            progress(f"{what}: {failed} sockets failed to open, e.g. {errors[:2]}")
        return sum(s[0] for s in status.values())

    def close(self) -> int:
        """Close every socket and end the processes; the sockets still open at the end."""
        held = 0
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc, pipe in zip(self.procs, self.pipes, strict=True):
            with contextlib.suppress(OSError, EOFError):
                if pipe.poll(60):
                    held += pipe.recv()[1]
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        return held


# ----- the servers -----


@contextlib.contextmanager
def _redis_only(state: Path) -> Iterator[Stack]:
    """A private local stack of which only Redis runs: all a gateway node needs to serve."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found: run scripts/bootstrap.sh")
    stack = Stack(state / "stack", Ports.free(), gateways=1, function_hosts=0, durable=False)
    try:
        stack.start(["redis"])
        yield stack
    finally:
        stack.stop()


@dataclass(slots=True)
class Breakdown:
    """Traced bytes per socket by allocation site (file:line), largest first."""

    traced_bytes_per_socket: float
    sites: list[tuple[str, float, float]] = field(default_factory=list)  # site, bytes, blocks


@dataclass(slots=True)
class ServerFigures:
    """One server's idle-socket figures."""

    name: str
    sockets: int
    rss_before_mib: float
    rss_after_mib: float
    bytes_per_socket: float
    breakdown: Breakdown | None = None


@dataclass(slots=True)
class IdleSockets:
    """Memory per idle socket of a gateway node and of a bare python-socketio server."""

    count: int
    room_size: int
    gateway: ServerFigures
    bare: ServerFigures
    traced: bool = False

    @property
    def bytes_per_socket(self) -> float:
        """The gateway's resident bytes per idle socket (traced bytes under --trace)."""
        return self.gateway.bytes_per_socket

    @property
    def bare_bytes_per_socket(self) -> float:
        """The bare python-socketio server's, measured in the same run."""
        return self.bare.bytes_per_socket

    @property
    def ratio(self) -> float:
        """The gateway's bytes per socket over the bare server's."""
        return self.bytes_per_socket / max(self.bare_bytes_per_socket, 1.0)


def _healthz_connections(base: str) -> int:
    return int(httpx.get(f"{base}/healthz", timeout=10).json().get("connections", 0))


async def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start; its log:\n{tail(log)}")
            await asyncio.sleep(0.2)


@contextlib.contextmanager
def _server(
    argv: list[str], env: dict[str, str], log: Path, trace_file: Path | None
) -> Iterator[subprocess.Popen[bytes]]:
    if trace_file is not None:
        # The same server, under tracemalloc, with a statistics dump on SIGUSR1.
        argv = [sys.executable, "-X", "tracemalloc=1", "-m", "bench.sockets", "--serve", *argv[2:]]
        env = {**env, _TRACE_FILE_ENV: str(trace_file)}
    proc = spawn(argv, log=log, env=env)
    try:
        yield proc
    finally:
        terminate(proc.pid, start_time(proc.pid), first=signal.SIGTERM, grace=15, child=proc)


async def _trace_stats(proc: subprocess.Popen[bytes], trace_file: Path) -> dict[str, list[int]]:
    """Ask the traced server for its allocation statistics: site -> [bytes, blocks]."""
    trace_file.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not trace_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the traced server wrote no statistics")
        await asyncio.sleep(0.2)
    stats: dict[str, list[int]] = json.loads(trace_file.read_text())
    return stats


def _breakdown(
    before: dict[str, list[int]], after: dict[str, list[int]], sockets: int, top: int
) -> Breakdown:
    diffs: list[tuple[str, float, float]] = []
    for site, (size, blocks) in after.items():
        was = before.get(site, [0, 0])
        diffs.append((site, (size - was[0]) / sockets, (blocks - was[1]) / sockets))
    total = sum(d[1] for d in diffs)
    diffs.sort(key=lambda d: -d[1])
    return Breakdown(round(total, 1), [(s, round(b, 1), round(n, 2)) for s, b, n in diffs[:top]])


async def _measure_one(
    name: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    *,
    count: int,
    procs: int,
    room_size: int,
    hold_s: float,
    state: Path,
    trace: bool,
    top: int,
    progress: Callable[[str], None],
) -> ServerFigures:
    base = f"http://{_HOST}:{port}"
    log = state / f"{name}.log"
    trace_file = state / f"{name}.trace.json" if trace else None
    with _server(argv, env, log, trace_file) as proc:
        await _wait_healthy(base, proc, log, name)
        clients = _Clients(port, f"{name}-{os.getpid()}", procs, room_size)
        try:
            warm = await clients.open(min(_WARMUP, count), f"{name} warm-up", progress)
            await asyncio.sleep(2.0)
            before_held = await asyncio.to_thread(_healthz_connections, base)
            before_rss = rss_kb(proc.pid)
            before_stats = await _trace_stats(proc, trace_file) if trace_file else {}
            progress(
                f"{name}: pid {proc.pid}, {warm} warm-up sockets held, RSS "
                f"{before_rss / 1024:.1f} MiB; opening {count} idle sockets from {procs} processes"
            )
            await clients.open(count, name, progress)
            progress(f"{name}: holding them {hold_s:.0f}s (a ping round trip included)")
            await asyncio.sleep(hold_s)
            after_rss = rss_kb(proc.pid)
            after_stats = await _trace_stats(proc, trace_file) if trace_file else {}
            held = await asyncio.to_thread(_healthz_connections, base) - before_held
        finally:
            still_open = await asyncio.to_thread(clients.close)
        if held < count * 0.99:
            raise RuntimeError(
                f"{name} held {held} of {count} sockets ({still_open} open at the clients); "
                f"its log:\n{tail(log)}"
            )
        breakdown = _breakdown(before_stats, after_stats, held, top) if trace_file else None
        per_socket = (
            breakdown.traced_bytes_per_socket
            if breakdown
            else (after_rss - before_rss) * 1024 / held
        )
        figures = ServerFigures(
            name=name,
            sockets=held,
            rss_before_mib=round(before_rss / 1024, 1),
            rss_after_mib=round(after_rss / 1024, 1),
            bytes_per_socket=round(per_socket),
            breakdown=breakdown,
        )
        progress(
            f"{name}: {held} sockets, RSS {figures.rss_before_mib} -> {figures.rss_after_mib} "
            f"MiB, {per_socket / 1000:.1f} KB per socket" + (" (traced)" if breakdown else "")
        )
        return figures


async def measure_idle_sockets(
    count: int,
    *,
    client_procs: int = 2,
    room_size: int = 10,
    hold_s: float = 25.0,
    trace: bool = False,
    top: int = 25,
    progress: Callable[[str], None] = say,
) -> IdleSockets:
    """Bytes per idle socket of a gateway node and of a bare python-socketio server, same run.

    Starts a private Redis, the gateway (``python -m realtime`` with the local stack's settings)
    and then the bare server, one at a time, each measured with ``count`` sockets joined to
    rooms of ``room_size``; both stopped afterwards. ``trace``: traced bytes (tracemalloc) and
    the top allocation sites instead of resident memory.
    """
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be in 1..{MAX_COUNT}")
    limit = raise_fd_limit()
    if count + _WARMUP + 200 > limit:
        raise RuntimeError(
            f"the open-files limit is {limit}: lower the count or raise the hard limit (ulimit -Hn)"
        )
    common: dict[str, Any] = {
        "count": count,
        "procs": client_procs,
        "room_size": room_size,
        "hold_s": hold_s,
    }
    with tempfile.TemporaryDirectory(prefix="chat-bench-sockets-") as tmp:
        state = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            services = await asyncio.to_thread(stack.enter_context, _redis_only(state))
            port = services.ports.gateway(1)
            env = {**os.environ, **services.env(), "CHAT_NODE_ID": "gateway-1"}
            gateway = await _measure_one(
                "gateway",
                [sys.executable, "-m", "realtime", "--host", _HOST, "--port", str(port)],
                env,
                port,
                state=state,
                trace=trace,
                top=top,
                progress=progress,
                **common,
            )
        bare_port = Ports.free().entry
        bare = await _measure_one(
            "bare",
            [sys.executable, "-m", "bench.bare_socketio", "--port", str(bare_port)],
            dict(os.environ),
            bare_port,
            state=state,
            trace=trace,
            top=top,
            progress=progress,
            **common,
        )
    return IdleSockets(count, room_size, gateway, bare, traced=trace)


# ----- the traced server -----


def _serve_traced(argv: list[str]) -> int:
    """Run a server (``realtime`` or ``bench.bare_socketio``) dumping allocations on SIGUSR1."""
    out = Path(os.environ[_TRACE_FILE_ENV])

    def dump(_signum: int, _frame: Any) -> None:
        stats = tracemalloc.take_snapshot().statistics("lineno")
        by_site: dict[str, list[int]] = {}
        for stat in stats:
            frame = stat.traceback[0]
            by_site[f"{frame.filename}:{frame.lineno}"] = [stat.size, stat.count]
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(by_site))
        tmp.replace(out)

    signal.signal(signal.SIGUSR1, dump)
    module, *rest = argv
    if module == "realtime":
        from realtime.__main__ import main as serve
    elif module == "bench.bare_socketio":
        from bench.bare_socketio import main as serve
    else:
        raise SystemExit(f"cannot trace {module!r}")
    return serve(rest)


def _short(site: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(Path(__file__).resolve().parents[1])):
        if marker in site:
            return site.split(marker, 1)[1].lstrip("/")
    return site


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure both servers, print the figures."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--serve"]:
        return _serve_traced(args_in[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.sockets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=10_000, help=f"idle sockets (1..{MAX_COUNT})")
    parser.add_argument("--client-procs", type=int, default=2, help="processes opening them")
    parser.add_argument("--room-size", type=int, default=10, help="sockets per joined room")
    parser.add_argument("--hold", type=float, default=25.0, help="seconds to hold them open")
    parser.add_argument("--trace", action="store_true", help="tracemalloc breakdown instead")
    parser.add_argument("--top", type=int, default=25, help="allocation sites shown (--trace)")
    args = parser.parse_args(args_in)
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be in 1..{MAX_COUNT}")
    if not 1 <= args.client_procs <= 8 or args.room_size < 1 or not 0 <= args.hold <= 300:
        parser.error("--client-procs 1..8, --room-size >= 1, --hold 0..300")
    say(
        f"bench.sockets: {args.count} idle sockets, rooms of {args.room_size}, "
        f"{os.cpu_count()} cores"
    )
    result = asyncio.run(
        measure_idle_sockets(
            args.count,
            client_procs=args.client_procs,
            room_size=args.room_size,
            hold_s=args.hold,
            trace=args.trace,
            top=args.top,
        )
    )
    unit = "traced bytes" if result.traced else "bytes (RSS)"
    for figures in (result.gateway, result.bare):
        if figures.breakdown is not None:
            print(f"\n{figures.name}: top allocation sites, bytes per socket")
            for site, size, blocks in figures.breakdown.sites:
                print(f"  {size:9.1f} B  {blocks:6.2f} blocks  {_short(site)}")
    print(
        f"\nidle sockets: {result.gateway.sockets} on the gateway, {result.bare.sockets} on the "
        f"bare server; {unit} per socket: gateway {result.bytes_per_socket:,.0f}, bare "
        f"{result.bare_bytes_per_socket:,.0f}, ratio {result.ratio:.2f} x",
        flush=True,
    )
    print(json.dumps({**asdict(result), "ratio": round(result.ratio, 3)}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
