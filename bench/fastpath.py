"""Fast-path bench: rooms spread over two gateway nodes, every member a sender, then find-max.

Scenario: --rooms rooms of --room-size members (default 20 x 10 = 200 clients), each room half on
gateway node 1 and half on node 2, every client a sender of --text-bytes texts over the WebSocket
transport. Phases, each on the same connections:

1. fastpath: a fixed --rate (total msg/s, default 1,000) for --duration s: delivery latency
   (send -> arrival at every member, both nodes), CPU of every component from /proc, lost and
   duplicated deliveries; then find-max: x--factor per --step s until delivery p99 exceeds
   --p99-limit ms or loss exceeds --loss-limit % (when --rate itself is not held, /--factor per
   step down to --min-rate instead). At the end every accepted message must be stored in
   PostgreSQL.
2. idle: a third gateway node whose only clients are in another room: its CPU per message of
   the active rooms.
3. outage: at --outage-rate msg/s, the Kafka broker is killed with SIGKILL for --outage-seconds,
   then started again: latency during the outage, lost, duplicated, out-of-order, and the drain
   time (broker back -> every message of the run stored).

In the same run the fastpath phase is repeated on a bare python-socketio pair (AsyncServer +
AsyncRedisManager on uvicorn with the gateway's server options, a private Redis), for the ratio.

Load: two generator processes (one per node) of raw WebSocket clients; each send carries its
wall-clock time in the text, latency is taken on receipt, acks are awaited without blocking the
send loop. The send rate limits of the stack are raised for the run. Loopback only; bounded in
count and time; prints progress; stops by itself and removes its stacks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from bench.bare_socketio import bare_pair
from bench.realtime import raise_fd_limit, say, ws_url
from bench.stack import private_stack
from devstack.stack import Stack

# Generous enough that no send of the scenario is ever refused; the run says it raised them.
RAISED_LIMITS = (
    "send.user=100000:100000,send.socket=100000:100000,typing.socket=2:5,join.socket=1000:1000"
)
MAX_RATE = 50_000
MAX_CLIENTS = 2_000
# Longer than the stack gives a broker to start (120 s): the outage phase's sending bound.
_KAFKA_START_S = 130
_TICK = os.sysconf("SC_CLK_TCK")

_TEXT = re.compile(rb'"text":\s*"([^"]*)"')
_SEQ = re.compile(rb'"seq":\s*(\d+)')
_OK = re.compile(rb'"ok":\s*true')
_CODE = re.compile(rb'"code":\s*"([a-z_]+)"')


# ----- a minimal WebSocket + Socket.IO client, as cheap per frame as it can be -----


class Client(asyncio.Protocol):
    """One raw WebSocket carrying Engine.IO v4 / Socket.IO v5, parsed by hand."""

    def __init__(self, gen: Generator, index: int, user: str, room: str, node: int) -> None:
        self.gen = gen
        self.index = index
        self.user = user
        self.room = room
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.calls: dict[int, asyncio.Future[bytes]] = {}
        # ack id -> message key, for sends whose ack has not come yet
        self.pending: dict[int, bytes] = {}
        self.next_id = 0
        self.next_n = 0
        self.seen: set[bytes] = set()
        self.last_seq = 0
        self.closed = False

    # transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, but they have the same methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        transport.write(
            (
                f"GET {self.gen.path} HTTP/1.1\r\nHost: {self.gen.netloc}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before connecting: {exc}"))

    def send_text(self, payload: bytes) -> None:
        """One masked text frame; a zero mask key leaves the bytes as they are (RFC 6455 5.3)."""
        n = len(payload)
        if n < 126:
            head = bytes((0x81, 0x80 | n))
        elif n < 65536:
            head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
        if self.transport is not None and not self.closed:
            self.transport.write(head + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self.opened.set_exception(ConnectionError(f"upgrade refused: {status!r}"))
                return
            self.upgraded = True
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + length:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if opcode in (1, 2):
                self.on_packet(payload)
            elif opcode == 9 and self.transport is not None:
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
        if pos:
            del buf[:pos]

    # Engine.IO / Socket.IO

    def on_packet(self, p: bytes) -> None:
        if p.startswith(b'42["message"'):
            self.gen.on_message(self, p)
        elif p.startswith(b"43"):
            bracket = p.index(b"[")
            ack_id = int(p[2:bracket])
            key = self.pending.pop(ack_id, None)
            if key is not None:
                self.gen.on_send_ack(key, p)
            else:
                call = self.calls.pop(ack_id, None)
                if call is not None and not call.done():
                    call.set_result(p[bracket:])
        elif p == b"2":
            self.send_text(b"3")
        elif p.startswith(b"0{"):
            self.send_text(b"40" + json.dumps({"user": self.user}).encode())
        elif p.startswith(b"40"):
            if not self.opened.done():
                self.opened.set_result(None)
        elif p.startswith(b"44") and not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connect refused: {p[:200]!r}"))

    async def call(self, event: str, data: Any, timeout: float = 20) -> bytes:
        """Emit with an ack and wait for it: the ack's JSON bytes."""
        ack_id = self.next_id
        self.next_id += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.calls[ack_id] = future
        self.send_text(f"42{ack_id}".encode() + json.dumps([event, data]).encode())
        return await asyncio.wait_for(future, timeout)

    def send_message(self, phase: int, text_bytes: int) -> bytes:
        """Emit one ``send`` without waiting; return its key."""
        n = self.next_n
        self.next_n += 1
        key = b"%d %d" % (self.index, n)
        text = f"{time.time():.6f} {phase} {self.index} {n} ".ljust(text_bytes, "x")
        ack_id = self.next_id
        self.next_id += 1
        self.pending[ack_id] = key
        # The epoch keeps ids unique when a sender's connection is opened again by a new process.
        self.send_text(
            b'42%d["send",{"room":"%s","text":"%s","client_msg_id":"%s-%d"}]'
            % (ack_id, self.room.encode(), text.encode(), self.gen.epoch, n)
        )
        return key


# ----- a generator process -----


@dataclass(slots=True)
class Tally:
    """What one generator saw of one phase."""

    phase: int
    phase_b: bytes = b""
    sent: int = 0
    acked: list[bytes] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    # message key (b"<sender> <n>") -> distinct members of this process that received it
    reached: dict[bytes, int] = field(default_factory=dict)
    duplicated: int = 0
    out_of_order: int = 0
    deliveries: int = 0
    latency: array[float] = field(default_factory=lambda: array("d"))
    cross: array[float] = field(default_factory=lambda: array("d"))
    sent_at: array[float] = field(default_factory=lambda: array("d"))


class Generator:
    """The clients of one process, their send pacing and what they receive."""

    def __init__(self, spec: dict[str, Any], inbox: Connection, pipe: Connection) -> None:
        self.spec = spec
        # Commands come on their own pipe: watching it makes its descriptor non-blocking, and
        # a report of megabytes must go out on a blocking one.
        self.inbox = inbox
        self.pipe = pipe
        parts = urlsplit(spec["url"])
        self.netloc = parts.netloc
        self.epoch = secrets.token_hex(4).encode()
        self.path = f"{parts.path}?{parts.query}"
        self.clients: list[Client] = []
        self.tally: Tally | None = None
        # deliveries of an earlier phase that came after it was closed
        self.late = 0
        # sender index (as in the text) -> the node its client is on
        self.node_of: dict[bytes, int] = {}
        self.commands: asyncio.Queue[Any] = asyncio.Queue()
        # the phase whose sending the parent ended early
        self.stopped = 0

    # receiving

    def on_message(self, client: Client, frame: bytes) -> None:
        now = time.time()
        found = _TEXT.search(frame)
        if found is None:
            return
        ts, phase, sender, n = found.group(1).split(b" ", 4)[:4]
        tally = self.tally
        if tally is None or phase != tally.phase_b:
            self.late += 1
            return
        key = sender + b" " + n
        tally.deliveries += 1
        if key in client.seen:
            tally.duplicated += 1
            return
        client.seen.add(key)
        reached = tally.reached
        reached[key] = reached.get(key, 0) + 1
        seq_found = _SEQ.search(frame)
        if seq_found is not None:
            seq = int(seq_found.group(1))
            if seq <= client.last_seq:
                tally.out_of_order += 1
            else:
                client.last_seq = seq
        sent = float(ts)
        took = now - sent
        tally.latency.append(took)
        tally.sent_at.append(sent)
        node = self.node_of.get(sender)
        if node is None:
            half = self.spec["room_size"] // 2
            node = self.node_of[sender] = (int(sender) % self.spec["room_size"]) // half
        if node != client.node:
            tally.cross.append(took)

    def on_send_ack(self, key: bytes, ack: bytes) -> None:
        tally = self.tally
        if tally is None:
            return
        if _OK.search(ack):
            tally.acked.append(key)
        else:
            code = _CODE.search(ack)
            tally.rejected[code.group(1).decode() if code else "unknown"] += 1

    # lifecycle

    async def open_all(self) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        host, port = self.netloc.rsplit(":", 1)
        gate = asyncio.Semaphore(20)
        failures = 0

        async def one(index: int, user: str, room: str, node: int) -> None:
            nonlocal failures
            async with gate:
                try:
                    _, client = await loop.create_connection(
                        lambda: Client(self, index, user, room, node), host, int(port)
                    )
                    await asyncio.wait_for(client.opened, 30)
                    ack = await client.call("join", {"room": room})
                    if not _OK.search(ack):
                        raise RuntimeError(f"join refused: {ack[:200]!r}")
                    self.clients.append(client)
                except Exception as exc:
                    failures += 1
                    if failures <= 3:
                        self.pipe.send(("error", f"{user}: {exc}"))

        await asyncio.gather(*(one(*c) for c in self.spec["clients"]))
        self.clients.sort(key=lambda c: c.index)
        return len(self.clients), failures

    async def run_phase(self, phase: int, rate: float, start_at: float, duration: float) -> None:
        """Send at ``rate`` msg/s (this process's share) from ``start_at`` for ``duration``."""
        senders = [c for c in self.clients if self.spec["senders"]]
        text_bytes = self.spec["text_bytes"]
        tally = self.tally = Tally(phase, str(phase).encode())
        for client in self.clients:
            client.seen.clear()
        cpu0 = own_cpu()
        begin = time.monotonic() + (start_at - time.time())
        await asyncio.sleep(max(0.0, begin - time.monotonic()))
        progress_at = begin + 1
        i = 0
        while (elapsed := time.monotonic() - begin) < duration and self.stopped != phase:
            due = int(rate * elapsed) if senders else 0
            while i < due:
                client = senders[i % len(senders)]
                if not client.closed:
                    client.send_message(phase, text_bytes)
                    tally.sent += 1
                i += 1
            if time.monotonic() >= progress_at:
                progress_at += 1
                self.report_progress()
            await asyncio.sleep(0.002)
        self.pipe.send(("sent", phase, tally.sent, time.monotonic() - begin))
        while True:
            try:
                command = await asyncio.wait_for(self.commands.get(), 1.0)
            except TimeoutError:
                self.report_progress()
                continue
            if command == ("end", phase):
                break
        self.tally = None
        unacked = sum(len(c.pending) for c in self.clients)
        for client in self.clients:
            client.pending.clear()
        self.pipe.send(
            (
                "report",
                {
                    "phase": phase,
                    "sent": tally.sent,
                    "acked": tally.acked,
                    "rejected": dict(tally.rejected),
                    "unacked": unacked,
                    "reached": dict(tally.reached),
                    "duplicated": tally.duplicated,
                    "out_of_order": tally.out_of_order,
                    "deliveries": tally.deliveries,
                    "latency": tally.latency,
                    "cross": tally.cross,
                    "sent_at": tally.sent_at,
                    "cpu_s": own_cpu() - cpu0,
                    "wall_s": time.monotonic() - begin,
                    "closed": sum(1 for c in self.clients if c.closed),
                    "late": self.late,
                    "last_seq": {c.room: c.last_seq for c in self.clients},
                },
            )
        )

    def report_progress(self) -> None:
        tally = self.tally
        if tally is None:
            return
        pending = sum(len(c.pending) for c in self.clients)
        self.pipe.send(
            ("progress", tally.phase, tally.sent, len(tally.acked), pending, tally.deliveries)
        )

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.inbox.fileno(), lambda: self.commands.put_nowait(self.inbox.recv()))
        opened, failures = await self.open_all()
        self.pipe.send(("ready", opened, failures))
        running: asyncio.Task[None] | None = None
        while True:
            command = await self.commands.get()
            if command[0] == "run":
                _, phase, rate, start_at, duration = command
                running = asyncio.create_task(self.run_phase(phase, rate, start_at, duration))
            elif command[0] == "stop":
                self.stopped = command[1]
            elif command[0] == "late":
                self.pipe.send(("late", self.late))
            elif command[0] == "end":
                await self.commands.put(command)
                if running is not None:
                    await running
                    running = None
            elif command[0] == "quit":
                break
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0.2)


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _generator_process(spec: dict[str, Any], inbox: Connection, pipe: Connection) -> None:
    raise_fd_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_generator_main(spec, inbox, pipe))


async def _generator_main(spec: dict[str, Any], inbox: Connection, pipe: Connection) -> None:
    await Generator(spec, inbox, pipe).main()


class Channel:
    """The parent's side of a generator: commands out on one pipe, reports in on another."""

    def __init__(self, commands: Connection, reports: Connection) -> None:
        self.commands, self.reports = commands, reports

    def send(self, message: Any) -> None:
        self.commands.send(message)

    def poll(self, timeout: float = 0.0) -> bool:
        return self.reports.poll(timeout)

    def recv(self) -> Any:
        return self.reports.recv()


# ----- the parent: phases, CPU, figures -----


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, utime + stime in ticks) of every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = (entry / "stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            table[int(entry.name)] = (
                int(fields[1]),
                int(fields[2]),
                int(fields[11]) + int(fields[12]),
            )
    return table


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU of the machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def cpu_pressure() -> float | None:
    """The share of the last 10 s in which runnable tasks waited for a CPU (PSI), in %."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        line = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
        return float(line.split()[1].split("=")[1])
    return None


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid``, its process group and its descendants (PostgreSQL's backends
    leave the postmaster's group, so the group alone would miss them)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for member, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(member)
    found = {pid} | {m for m, (_, group, _) in table.items() if group == pid}
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sum(table[m][2] for m in found if m in table)


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-quantile in milliseconds (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) * 1000, 2)


@dataclass(slots=True)
class Phase:
    """The merged figures of one phase over every generator."""

    name: str
    target: float
    seconds: float
    sent: int = 0
    acked: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    unacked: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    deliveries: int = 0
    expected: int = 0
    latency: list[float] = field(default_factory=list)
    cross: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    gen_cpu_s: float = 0.0
    gen_wall_s: float = 0.0
    # the whole machine's busy CPU over the window (% of one core), and its CPU pressure
    machine_pct: float = 0.0
    pressure: float | None = None
    # per component: % of one core over the send window, and CPU seconds
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    closed: int = 0
    late: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)
    acked_per_room: Counter[int] = field(default_factory=Counter)

    @property
    def offered(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def loss_pct(self) -> float:
        return 100 * self.lost / self.acked if self.acked else 0.0

    @property
    def failed_pct(self) -> float:
        refused = sum(self.rejected.values()) + self.unacked
        return 100 * (self.lost + refused) / self.sent if self.sent else 0.0

    @property
    def gen_pct(self) -> float:
        """The generators' CPU in % of one core, from the phase's start to its report."""
        return 100 * self.gen_cpu_s / self.gen_wall_s if self.gen_wall_s else 0.0

    def line(self) -> str:
        refused = sum(self.rejected.values())
        return (
            f"{self.name}: target {self.target:.0f} msg/s, offered {self.offered:.0f}, "
            f"acked {self.acked}/{self.sent} (refused {refused}, unacked {self.unacked}), "
            f"deliveries {self.deliveries}/{self.expected}, p50 {pct(self.latency, 0.5)} ms "
            f"p99 {pct(self.latency, 0.99)} ms (other node p99 {pct(self.cross, 0.99)} ms), "
            f"lost {self.lost} ({self.loss_pct:.3f} %), duplicated {self.duplicated}, "
            f"out-of-order {self.out_of_order}, "
            f"generators {self.gen_pct:.0f} % of a core"
        )


class Load:
    """The generator processes of one system under test, driven phase by phase."""

    def __init__(
        self,
        urls: list[str],
        args: argparse.Namespace,
        run_id: str,
        send_from: Sequence[int] = (0, 1),
    ) -> None:
        self.args = args
        self.run_id = run_id
        # the nodes whose clients send (the others' only receive)
        self.send_from = tuple(send_from)
        self.rooms = [f"fp-{run_id}-{r}" for r in range(args.rooms)]
        self.room_size = args.room_size
        self.phase_no = 0
        # the last phase left deliveries outstanding: let them run out before the next one
        self.backlog = False
        # the last phase lost connections: open them again before the next one
        self.broken = False
        self.procs: list[tuple[Any, Channel]] = []
        self.urls = urls[:2]
        try:
            self._open_senders()
        except BaseException:
            self.close()
            raise

    def _open_senders(self) -> None:
        half = self.room_size // 2
        for node, url in enumerate(self.urls):
            clients = [
                (r * self.room_size + s, f"fp-{self.run_id}-u{r * self.room_size + s}", room, node)
                for r, room in enumerate(self.rooms)
                for s in range(node * half, (node + 1) * half)
            ]
            self._spawn(url, clients, senders=node in self.send_from)
        # The two nodes' processes (senders or not) are always the first two.
        self.procs = self.procs[-2:] + self.procs[:-2]
        self._await_ready(self.procs[:2], len(self.rooms) * self.room_size)

    def reconnect(self) -> None:
        """New sender processes and connections, after a phase in which the server closed some."""
        say("load: the server closed connections or stopped acking: opening them again")
        senders, self.procs = self.procs[:2], self.procs[2:]
        self._stop(senders)
        self._open_senders()

    def add_listeners(self, url: str, count: int) -> None:
        """``count`` clients on ``url`` in a room of their own: they receive nothing of the rest."""
        other = f"fp-{self.run_id}-other"
        clients = [(-1 - i, f"fp-{self.run_id}-o{i}", other, 2) for i in range(count)]
        self._spawn(url, clients, senders=False)
        self._await_ready(self.procs[-1:], count)

    def _spawn(self, url: str, clients: list[Any], *, senders: bool) -> None:
        spec = {
            "url": ws_url(url),
            "clients": clients,
            "senders": senders,
            "room_size": self.room_size,
            "text_bytes": self.args.text_bytes,
        }
        ctx = mp.get_context("spawn")
        inbox, commands = ctx.Pipe(duplex=False)
        reports, outbox = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_generator_process, args=(spec, inbox, outbox), daemon=True)
        proc.start()
        self.procs.append((proc, Channel(commands, reports)))

    def _await_ready(self, procs: list[tuple[Any, Channel]], expected: int) -> None:
        opened = failures = 0
        deadline = time.monotonic() + 120
        for _, pipe in procs:
            while True:
                if not pipe.poll(max(0.1, deadline - time.monotonic())):
                    raise RuntimeError("the generators did not connect their clients within 120s")
                message = pipe.recv()
                if message[0] == "error":
                    say(f"load: {message[1]}")
                    continue
                opened += message[1]
                failures += message[2]
                break
        say(f"load: {opened}/{expected} clients connected and joined ({failures} failed)")
        if failures:
            raise RuntimeError(f"{failures} clients could not connect or join: see above")

    def close(self) -> None:
        self._stop(self.procs)

    @staticmethod
    def _stop(procs: list[tuple[Any, Channel]]) -> None:
        for _, pipe in procs:
            with contextlib.suppress(OSError):
                pipe.send(("quit",))
        for proc, _ in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()

    def phase(
        self,
        name: str,
        rate: float,
        seconds: float,
        *,
        grace: float,
        pids: Callable[[], dict[str, int]] | None = None,
        events: Sequence[tuple[float, Callable[[], None]]] = (),
    ) -> Phase:
        """One phase at ``rate`` msg/s in total for ``seconds``; wait out the tail; merge."""
        if self.backlog:
            self.settle()
        if self.broken:
            self.reconnect()
            self.broken = False
        self.phase_no += 1
        no = self.phase_no
        senders = self.procs[:2]
        start_at = time.time() + 0.5
        for _, pipe in senders:
            pipe.send(("run", no, rate / len(self.send_from), start_at, seconds))
        result = Phase(name, rate, seconds)
        progress: dict[int, tuple[int, int, int, int]] = {}
        sent_done = 0
        sending_s = 0.0
        cpu_before: dict[str, int] = {}
        todo = sorted(events, key=lambda e: e[0])
        shown = time.monotonic()
        deadline: float | None = None
        time.sleep(max(0.0, start_at - time.time()))
        if pids is not None:
            cpu_before = {n: cpu_ticks(p) for n, p in pids().items()}
            machine_before = machine_ticks()
        cpu_window = time.monotonic()
        cpu_done = pids is None
        while True:
            now = time.monotonic()
            elapsed = time.time() - start_at
            while todo and elapsed >= todo[0][0]:
                todo.pop(0)[1]()
                elapsed = time.time() - start_at
            if not cpu_done and pids is not None and (elapsed >= seconds or sent_done):
                cpu_done = True
                window = time.monotonic() - cpu_window
                after = {n: cpu_ticks(p) for n, p in pids().items()}
                result.cpu_s = {
                    n: (after[n] - cpu_before[n]) / _TICK for n in after if n in cpu_before
                }
                result.cpu = {n: round(100 * v / window, 1) for n, v in result.cpu_s.items()}
                busy, total = (a - b for a, b in zip(machine_ticks(), machine_before, strict=True))
                result.machine_pct = 100 * (os.cpu_count() or 1) * busy / max(total, 1)
                result.pressure = cpu_pressure()
            for i, (_, pipe) in enumerate(senders):
                while pipe.poll():
                    message = pipe.recv()
                    if message[0] == "progress":
                        progress[i] = message[2:]
                    elif message[0] == "sent":
                        sent_done += 1
                        sending_s = max(sending_s, message[3])
            acked = sum(p[1] for p in progress.values())
            pending = sum(p[2] for p in progress.values())
            delivered = sum(p[3] for p in progress.values())
            if sent_done == len(senders) and deadline is None:
                deadline = time.monotonic() + grace
            if now - shown >= 2:
                shown = now
                say(
                    f"{name}: {elapsed:4.0f}s sent {sum(p[0] for p in progress.values())}, "
                    f"acked {acked}, awaiting acks {pending}, deliveries {delivered}"
                )
            if deadline is not None and not todo:
                done = pending == 0 and delivered >= acked * self.room_size
                if done or time.monotonic() >= deadline:
                    break
            time.sleep(0.05)
        for _, pipe in senders:
            pipe.send(("end", no))
        reports = []
        for _, pipe in senders:
            while True:
                message = pipe.recv()
                if message[0] == "report":
                    reports.append(message[1])
                    break
        # Sending may have been stopped early (stop_sending()): rates count what really ran.
        result.seconds = min(seconds, sending_s) if sending_s else seconds
        self._merge(result, reports)
        self.backlog = result.lost > 0 or result.unacked > 0
        # Closed connections, or a server that acks nothing any more: start over on new sockets.
        self.broken = result.closed > 0 or (result.sent > 0 and result.acked == 0)
        return result

    def settle(self, longest: float = 90) -> None:
        """Before the next phase, let the deliveries of an overloaded one run out (bounded)."""
        started = time.monotonic()
        first = last = None
        while time.monotonic() - started < longest:
            for _, channel in self.procs[:2]:
                channel.send(("late",))
            total = 0
            for _, channel in self.procs[:2]:
                while (message := channel.recv())[0] != "late":
                    pass
                total += message[1]
            if first is None:
                first = total
            elif total == last:
                break
            last = total
            time.sleep(2)
        self.backlog = False
        say(
            f"settle: {(last or 0) - (first or 0)} more deliveries of the last phase came after "
            f"its deadline (counted lost); waited {time.monotonic() - started:.0f}s"
        )

    def stop_sending(self) -> None:
        """End the sending of the phase that runs now, before its planned duration."""
        for _, channel in self.procs[:2]:
            channel.send(("stop", self.phase_no))

    def _merge(self, result: Phase, reports: list[dict[str, Any]]) -> None:
        reached: Counter[bytes] = Counter()
        acked: list[bytes] = []
        for report in reports:
            result.sent += report["sent"]
            result.rejected.update(report["rejected"])
            result.unacked += report["unacked"]
            result.duplicated += report["duplicated"]
            result.out_of_order += report["out_of_order"]
            result.deliveries += report["deliveries"]
            result.latency.extend(report["latency"])
            result.cross.extend(report["cross"])
            result.sent_at.extend(report["sent_at"])
            result.gen_cpu_s += report["cpu_s"]
            result.gen_wall_s = max(result.gen_wall_s, report["wall_s"])
            result.closed += report["closed"]
            result.late += report["late"]
            for room, seq in report["last_seq"].items():
                result.last_seq[room] = max(seq, result.last_seq.get(room, 0))
            reached.update(report["reached"])
            acked.extend(report["acked"])
        result.acked = len(acked)
        result.expected = len(acked) * self.room_size
        # Lost: accepted (acked ok) but not received by every member of its room in time.
        result.lost = sum(1 for key in acked if reached.get(key, 0) < self.room_size)
        for key in acked:
            result.acked_per_room[int(key.split(b" ", 1)[0]) // self.room_size] += 1


# ----- phases of a system -----


def verdict(phase: Phase, args: argparse.Namespace) -> str | None:
    """Why a phase's rate was not held (None when it was)."""
    p99 = pct(phase.latency, 0.99)
    if phase.closed:
        return f"the server closed {phase.closed} client connections"
    if phase.offered < 0.95 * phase.target:
        return f"the generators offered only {phase.offered:.0f} msg/s (generator-bound)"
    if phase.loss_pct > args.loss_limit:
        return f"loss {phase.loss_pct:.3f} % > {args.loss_limit} %"
    if phase.failed_pct > args.loss_limit:
        return f"{phase.failed_pct:.3f} % of sends refused, unacked or lost > {args.loss_limit} %"
    if p99 is None or p99 > args.p99_limit:
        return f"delivery p99 {p99} ms > {args.p99_limit:.0f} ms"
    return None


def show_cpu(phase: Phase) -> None:
    """CPU per component in % of one core, and per 1,000 deliveries."""
    if not phase.cpu:
        return
    total = sum(phase.cpu.values())
    parts = ", ".join(f"{n} {v:.0f} %" for n, v in sorted(phase.cpu.items(), key=lambda i: -i[1]))
    say(f"{phase.name}: CPU in % of one core: {parts}; all {total:.0f} %")
    others = phase.machine_pct - total - phase.gen_pct
    say(
        f"{phase.name}: the machine was {phase.machine_pct:.0f} % busy (of one core; "
        f"{100 * (os.cpu_count() or 1)} % is all); processes outside this bench ~{others:.0f} %, "
        f"CPU pressure {phase.pressure} % of the time a task waited for a core"
        + (": other work ran, figures are noisy" if others > 20 else "")
    )
    if phase.expected:
        per = {n: 1e6 * v / phase.expected for n, v in phase.cpu_s.items()}
        parts = ", ".join(f"{n} {v:.1f}" for n, v in sorted(per.items(), key=lambda i: -i[1]))
        say(
            f"{phase.name}: CPU ms per 1,000 deliveries (accepted x members): {parts}; "
            f"all {sum(per.values()):.1f}"
        )


def fastpath(
    load: Load, args: argparse.Namespace, pids: Callable[[], dict[str, int]], label: str
) -> dict[str, Any]:
    """Warm-up, the fixed rate (with CPU), then find-max; the figures of one system."""
    warmup = None
    if args.warmup:
        say(f"{label}: warming up {args.warmup:.0f}s at {args.rate} msg/s")
        warmup = load.phase(f"{label} warm-up", args.rate, args.warmup, grace=args.grace)
    fixed = load.phase(f"{label} fixed", args.rate, args.duration, grace=args.grace, pids=pids)
    say(fixed.line())
    show_cpu(fixed)
    steps = [fixed]
    reason = verdict(fixed, args)
    held: Phase | None = None if reason else fixed
    rate = float(args.rate)
    if reason is not None:
        # Not even the fixed rate held: look downwards, so the ratio still has two figures.
        say(f"{label}: {args.rate} msg/s not held ({reason}); trying lower rates")
        reason = f"{args.rate} msg/s not held: {reason}"
        while held is None and rate / args.factor >= args.min_rate:
            rate /= args.factor
            step = load.phase(f"{label} step", rate, args.step, grace=args.grace)
            say(step.line())
            steps.append(step)
            if verdict(step, args) is None:
                held = step
    while held is not None and reason is None:
        rate *= args.factor
        if rate > args.max_rate or len(steps) > args.max_steps:
            reason = f"stopped at the bench's bound ({args.max_rate} msg/s, {args.max_steps} steps)"
            break
        step = load.phase(f"{label} step", rate, args.step, grace=args.grace)
        say(step.line())
        steps.append(step)
        reason = verdict(step, args)
        if reason is None:
            held = step
    say(f"{label}: find-max ends: {reason}")
    return {
        "warmup": warmup,
        "fixed": fixed,
        "steps": steps,
        "held": held,
        "why_not_more": reason,
        "max_held": round(held.acked / held.seconds) if held else 0,
    }


def stored(dsn: str, run_id: str) -> int:
    """Rows of the run's rooms in PostgreSQL."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM messages WHERE room LIKE %s", (f"fp-{run_id}-%",)
        ).fetchone()
    return int(row[0]) if row else 0


class StoredWatch:
    """Polls the run's row count in a thread: (time, count) samples."""

    def __init__(self, dsn: str, run_id: str) -> None:
        self.dsn, self.run_id = dsn, run_id
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.time(), stored(self.dsn, self.run_id)))
            self._stop.wait(0.25)

    def reached(self, target: int) -> float | None:
        """When the count first reached ``target``."""
        return next((t for t, n in self.samples if n >= target), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_stored(dsn: str, run_id: str, target: int, timeout: float) -> tuple[int, float]:
    """Wait until ``target`` rows are stored (bounded); (rows, seconds waited)."""
    started = time.monotonic()
    while True:
        count = stored(dsn, run_id)
        waited = time.monotonic() - started
        if count >= target or waited > timeout:
            return count, waited
        if int(waited) % 5 == 0:
            say(f"storage: {count}/{target} rows of the run in PostgreSQL after {waited:.0f}s")
        time.sleep(0.5)


def history_check(http_url: str, rooms: list[str], acked: Counter[int]) -> dict[str, Any]:
    """Each room's newest seq in the HTTP history against the messages accepted into it."""
    matching, newest = 0, {}
    with httpx.Client(base_url=http_url, timeout=10, headers={"X-User": "fp-bench"}) as client:
        for r, room in enumerate(rooms):
            page = client.get(f"/rooms/{room}/messages", params={"limit": 1}).json()
            seq = page["messages"][-1]["seq"] if page.get("messages") else 0
            newest[room] = seq
            matching += int(seq == acked[r])
    return {"rooms": len(rooms), "newest_seq_equals_accepted": matching}


def idle_node(stack: Stack, load: Load, args: argparse.Namespace) -> dict[str, Any]:
    """A third gateway, its clients only in another room: its CPU per message of the rest."""
    say("idle: starting gateway-3 (its clients join a room of their own)")
    stack.start_gateway("gateway-3")
    pid = stack.pid("gateway-3")
    assert pid is not None
    url = stack.endpoints()["ws_urls"][2]
    load.add_listeners(url, args.room_size)
    if load.backlog:
        load.settle()
    time.sleep(2)
    say(f"idle: gateway-3 CPU with no traffic for {args.idle_seconds:.0f}s")
    before, t0 = cpu_ticks(pid), time.monotonic()
    time.sleep(args.idle_seconds)
    quiet_s = (cpu_ticks(pid) - before) / _TICK
    quiet_rate = quiet_s / (time.monotonic() - t0)
    phase = load.phase(
        "idle", args.idle_rate, args.idle_seconds, grace=args.grace,
        pids=lambda: {"gateway-3": pid},
    )  # fmt: skip
    say(phase.line())
    busy_s = phase.cpu_s.get("gateway-3", 0.0)
    msgs = max(phase.acked, 1)
    figures: dict[str, Any] = {
        "_phase": phase,
        "rate": args.idle_rate,
        "messages": phase.acked,
        "gateway3_cpu_pct_quiet": round(100 * quiet_rate, 2),
        "gateway3_cpu_pct_busy": phase.cpu.get("gateway-3"),
        "us_per_message": round(1e6 * busy_s / msgs, 2),
        "us_per_message_above_quiet": round(1e6 * (busy_s - quiet_rate * phase.seconds) / msgs, 2),
    }
    say(
        f"idle: gateway-3 spends {figures['us_per_message']} us of CPU per message of rooms it "
        f"does not carry ({figures['us_per_message_above_quiet']} us above its quiet "
        f"{figures['gateway3_cpu_pct_quiet']} % of a core)"
    )
    return figures


def outage(
    stack: Stack, load: Load, args: argparse.Namespace, stored_before: int
) -> dict[str, Any]:
    """Kill -9 the broker while messages flow; bring it back; latency, loss, order, drain."""
    marks: dict[str, float] = {}
    watch = StoredWatch(stack.postgres_dsn, load.run_id)

    def kill() -> None:
        stack.kill("kafka")
        marks["killed"] = time.time()
        say(f"outage: kafka killed with SIGKILL; back in {args.outage_seconds:.0f}s")

    def restart() -> None:
        marks["restart"] = time.time()
        say("outage: starting kafka again")
        stack.start(["kafka"])
        marks["back"] = time.time()
        load.stop_sending()
        watch.start()
        say(
            f"outage: kafka answers again ({marks['back'] - marks['restart']:.1f}s to start); "
            f"sending stops"
        )

    pre = args.outage_pre
    say(
        f"outage: {args.outage_rate} msg/s for {pre:.0f}s, then kafka down "
        f"{args.outage_seconds:.0f}s, sending until it answers again"
    )
    phase = load.phase(
        # The planned duration only bounds the phase: the broker's return ends the sending.
        "outage", args.outage_rate, pre + args.outage_seconds + _KAFKA_START_S,
        grace=args.outage_grace, events=[(pre, kill), (pre + args.outage_seconds, restart)],
    )  # fmt: skip
    say(phase.line())
    target = stored_before + phase.acked
    deadline = time.monotonic() + args.drain_timeout
    while watch.reached(target) is None and time.monotonic() < deadline:
        time.sleep(0.25)
    watch.stop()
    reached = watch.reached(target)
    during = [
        lat
        for lat, sent in zip(phase.latency, phase.sent_at, strict=True)
        if marks["killed"] <= sent <= marks["back"]
    ]
    figures = {
        "rate": args.outage_rate,
        "down_seconds": round(marks["back"] - marks["killed"], 1),
        "kafka_start_s": round(marks["back"] - marks["restart"], 1),
        "sent": phase.sent,
        "acked": phase.acked,
        "sent_during_outage": sum(1 for s in phase.sent_at if marks["killed"] <= s <= marks["back"])
        // load.room_size,
        "during_p50_ms": pct(during, 0.5),
        "during_p99_ms": pct(during, 0.99),
        "during_max_ms": round(max(during) * 1000, 1) if during else None,
        "lost": phase.lost,
        "duplicated": phase.duplicated,
        "out_of_order": phase.out_of_order,
        "refused": sum(phase.rejected.values()),
        "unacked": phase.unacked,
        "stored": watch.samples[-1][1] if watch.samples else None,
        "stored_target": target,
        "drain_s": round(reached - marks["back"], 1) if reached else None,
    }
    figures["_phase"] = phase
    say(
        f"outage: during it p50 {figures['during_p50_ms']} ms p99 {figures['during_p99_ms']} ms; "
        f"lost {phase.lost}, duplicated {phase.duplicated}, out-of-order {phase.out_of_order}; "
        f"drain {figures['drain_s']} s (broker back -> all {target} rows of the run stored)"
    )
    return figures


@contextlib.contextmanager
def raised_rate_limits() -> Iterator[None]:
    """Stacks started inside refuse no send of the scenario (RAISED_LIMITS); says so."""
    defaults = os.environ.get("CHAT_RATE_LIMITS")
    os.environ["CHAT_RATE_LIMITS"] = RAISED_LIMITS
    say(f"send rate limits raised for the run: CHAT_RATE_LIMITS={RAISED_LIMITS}")
    try:
        yield
    finally:
        if defaults is None:
            os.environ.pop("CHAT_RATE_LIMITS", None)
        else:
            os.environ["CHAT_RATE_LIMITS"] = defaults


def run_ours(args: argparse.Namespace, only: set[str]) -> dict[str, Any]:
    """The scenario on a private local stack."""
    run_id = uuid.uuid4().hex[:8]
    out: dict[str, Any] = {"run": run_id}
    with raised_rate_limits(), private_stack(gateways=2, function_hosts=1) as stack:
        points = stack.endpoints()
        dsn = points["postgres_dsn"]
        # Every component of the stack, found again per window (kafka's pid changes).
        pids = lambda: stack.endpoints()["pids"]  # noqa: E731
        load = Load(points["ws_urls"], args, run_id)
        phases: list[Phase] = []
        try:
            if "fastpath" in only:
                out["fastpath"] = fastpath(load, args, pids, "ours")
                if out["fastpath"]["warmup"] is not None:
                    phases.append(out["fastpath"]["warmup"])
                phases += out["fastpath"]["steps"]
            if "idle" in only:
                out["idle"] = idle_node(stack, load, args)
                phases.append(out["idle"]["_phase"])
            acked_all = Counter[int]()
            for phase in phases:
                acked_all.update(phase.acked_per_room)
            target = sum(acked_all.values())
            if target:
                say(f"storage: waiting for the {target} accepted messages in PostgreSQL")
                rows, waited = wait_stored(dsn, run_id, target, args.drain_timeout)
                out["stored"] = {"accepted": target, "rows": rows, "waited_s": round(waited, 1)}
                say(f"storage: {rows}/{target} rows stored ({waited:.1f}s after the last phase)")
            if "outage" in only:
                if load.backlog:
                    load.settle()
                out["outage"] = outage(stack, load, args, stored(dsn, run_id))
                acked_all.update(out["outage"]["_phase"].acked_per_room)
            if sum(acked_all.values()):
                out["history"] = history_check(points["http_url"], load.rooms, acked_all)
                say(
                    f"history: newest seq equals the messages accepted in "
                    f"{out['history']['newest_seq_equals_accepted']}/{len(load.rooms)} rooms"
                )
        finally:
            load.close()
    return out


def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    """The fastpath phase on a bare python-socketio pair."""
    say("bare: two python-socketio nodes (AsyncRedisManager, gateway's uvicorn options)")
    with bare_pair() as (urls, pids):
        load = Load(urls, args, uuid.uuid4().hex[:8])
        try:
            return fastpath(load, args, lambda: pids, "bare")
        finally:
            load.close()


# ----- report -----


def summary(
    ours: dict[str, Any], bare: dict[str, Any] | None, args: argparse.Namespace
) -> dict[str, Any]:
    """The figures as one JSON-able dict; prints the headline lines."""
    out: dict[str, Any] = {"rate_limits_raised": RAISED_LIMITS}
    print("\n== fastpath figures (one run, same machine)", flush=True)
    print(f"send rate limits were raised for the run: CHAT_RATE_LIMITS={RAISED_LIMITS}")
    for label, result in (("ours", ours.get("fastpath")), ("bare", (bare or None))):
        if not result:
            continue
        fixed: Phase = result["fixed"]
        out[label] = {
            "max_held_msg_s": result["max_held"],
            "max_held_target": round(result["held"].target) if result["held"] else 0,
            "why_not_more": result["why_not_more"],
            "steps": [
                {
                    "target": round(p.target),
                    "offered": round(p.offered),
                    "p50_ms": pct(p.latency, 0.5),
                    "p99_ms": pct(p.latency, 0.99),
                    "loss_pct": round(p.loss_pct, 3),
                }
                for p in result["steps"]
            ],
            "at_rate": {
                "rate": args.rate,
                "p50_ms": pct(fixed.latency, 0.5),
                "p99_ms": pct(fixed.latency, 0.99),
                "other_node_p50_ms": pct(fixed.cross, 0.5),
                "other_node_p99_ms": pct(fixed.cross, 0.99),
                "deliveries": fixed.deliveries,
                "lost": fixed.lost,
                "duplicated": fixed.duplicated,
                "out_of_order": fixed.out_of_order,
                "cpu_pct_of_core": fixed.cpu,
                "cpu_ms_per_1000_deliveries": {
                    n: round(1e6 * v / max(fixed.expected, 1), 2) for n, v in fixed.cpu_s.items()
                },
                "generators_cpu_pct_of_core": round(fixed.gen_pct, 1),
                "machine_busy_pct_of_core": round(fixed.machine_pct, 1),
                "outside_bench_pct_of_core": round(
                    fixed.machine_pct - sum(fixed.cpu.values()) - fixed.gen_pct, 1
                ),
                "cpu_pressure_pct": fixed.pressure,
            },
            "lost_all_phases": sum(p.lost for p in result["steps"]),
            "duplicated_all_phases": sum(p.duplicated for p in result["steps"]),
        }
        at = out[label]["at_rate"]
        print(
            f"{label}: max {result['max_held']} msg/s held ({result['why_not_more']}); "
            f"at {args.rate} msg/s p50 {at['p50_ms']} ms, p99 {at['p99_ms']} ms "
            f"(other node p99 {at['other_node_p99_ms']} ms); generators "
            f"{at['generators_cpu_pct_of_core']} % of a core; outside the bench "
            f"{at['outside_bench_pct_of_core']} % of a core"
        )
        cpu = ", ".join(f"{n} {v:.0f} %" for n, v in sorted(at["cpu_pct_of_core"].items()))
        per = ", ".join(f"{n} {v}" for n, v in sorted(at["cpu_ms_per_1000_deliveries"].items()))
        print(f"{label}: CPU (% of one core) {cpu}; ms of CPU per 1,000 deliveries {per}")
    if "ours" in out and "bare" in out and out["bare"]["max_held_msg_s"]:
        ratio = out["ours"]["max_held_msg_s"] / out["bare"]["max_held_msg_s"]
        out["ratio_to_bare"] = round(ratio, 2)
        print(f"ratio: ours / bare python-socketio = {ratio:.2f}x")
    if "fastpath" in ours:
        out["ours"]["lost"] = out["ours"].pop("lost_all_phases")
        out["ours"]["duplicated"] = out["ours"].pop("duplicated_all_phases")
        print(
            f"ours: every phase lost {out['ours']['lost']}, duplicated {out['ours']['duplicated']}"
        )
    if "stored" in ours:
        out["stored"] = ours["stored"]
        s = ours["stored"]
        print(f"ours: {s['rows']}/{s['accepted']} accepted messages stored in PostgreSQL")
    if "history" in ours:
        out["history"] = ours["history"]
    if "idle" in ours:
        out["idle"] = {k: v for k, v in ours["idle"].items() if not k.startswith("_")}
        i = ours["idle"]
        print(
            f"idle node: {i['us_per_message']} us of CPU per message of rooms it does not carry "
            f"({i['us_per_message_above_quiet']} us above its quiet load) at {i['rate']} msg/s"
        )
    if "outage" in ours:
        o = {k: v for k, v in ours["outage"].items() if not k.startswith("_")}
        out["outage"] = o
        print(
            f"kafka outage ({o['down_seconds']} s down at {o['rate']} msg/s): p50 "
            f"{o['during_p50_ms']} ms, p99 {o['during_p99_ms']} ms during it; lost {o['lost']}, "
            f"duplicated {o['duplicated']}, out-of-order {o['out_of_order']}; drain "
            f"{o['drain_s']} s"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the chosen parts on our stack and on the bare pair, print."""
    parser = argparse.ArgumentParser(
        prog="python -m bench fastpath",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--only", default="fastpath,idle,outage", help="comma list of fastpath, idle, outage")
    add("--skip-bare", action="store_true", help="no bare python-socketio pair (no ratio)")
    add("--rate", type=int, default=1_000, help="fixed rate, msg/s in total (default 1000)")
    add("--duration", type=float, default=20, help="seconds at the fixed rate (default 20)")
    add("--warmup", type=float, default=3, help="seconds of warm-up before it (0: none)")
    add("--step", type=float, default=10, help="seconds per find-max step (default 10)")
    add("--factor", type=float, default=1.5, help="rate factor per find-max step (default 1.5)")
    add("--max-rate", type=int, default=20_000, help="find-max stops above this rate")
    add("--max-steps", type=int, default=8, help="find-max stops after this many steps")
    add("--min-rate", type=int, default=100, help="when --rate is not held, look down to this")
    add("--p99-limit", type=float, default=500, help="a rate is held while p99 <= this (ms)")
    add("--loss-limit", type=float, default=0.1, help="... and loss <= this (%%)")
    add("--grace", type=float, default=5, help="seconds after a phase for its deliveries")
    add("--rooms", type=int, default=20)
    add("--room-size", type=int, default=10, help="members per room, half on each node (even)")
    add("--text-bytes", type=int, default=64)
    add("--idle-rate", type=int, default=1_000, help="msg/s while gateway-3 is measured")
    add("--idle-seconds", type=float, default=10)
    add("--outage-rate", type=int, default=200)
    add("--outage-seconds", type=float, default=15, help="how long the broker stays dead")
    add("--outage-pre", type=float, default=5, help="seconds of traffic before the kill")
    add("--outage-grace", type=float, default=60, help="seconds after it for late deliveries")
    add("--drain-timeout", type=float, default=120, help="longest wait for PostgreSQL")
    add("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    if not only or only - {"fastpath", "idle", "outage"}:
        parser.error("--only takes a comma list of fastpath, idle, outage")
    if not 1 <= args.rate <= MAX_RATE or not 1 <= args.max_rate <= MAX_RATE:
        parser.error(f"--rate and --max-rate must be in 1..{MAX_RATE}")
    if not 1 <= args.min_rate <= args.rate:
        parser.error("--min-rate must be in 1..--rate")
    if args.room_size < 2 or args.room_size % 2 or args.rooms * args.room_size > MAX_CLIENTS:
        parser.error(f"--room-size must be even, rooms x room size at most {MAX_CLIENTS}")
    if not 48 <= args.text_bytes <= 4000:
        parser.error("--text-bytes must be in 48..4000")
    timed = (args.duration, args.step, args.idle_seconds, args.outage_seconds, args.outage_pre)
    if not all(0 < t <= 300 for t in timed) or not 0 <= args.warmup <= 60:
        parser.error("durations must be in (0, 300] s, --warmup in [0, 60]")
    if not 1.05 <= args.factor <= 4 or not 1 <= args.max_steps <= 20:
        parser.error("--factor must be in 1.05..4, --max-steps in 1..20")
    limit = raise_fd_limit()
    say(f"fastpath: {os.cpu_count()} cores, fd limit {limit}; parts {', '.join(sorted(only))}")
    ours = run_ours(args, only)
    bare = None
    if "fastpath" in only and not args.skip_bare:
        bare = run_bare(args)
    figures = summary(ours, bare, args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
