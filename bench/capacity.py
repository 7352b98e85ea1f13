"""Capacity bench: the per-unit costs that docs/capacity.md turns into a sized deployment.

    python -m bench capacity [--rate 300] [--out capacity.json]

On a private local stack (standalone Redis, Kafka, PostgreSQL, 2 gateway nodes, 1 function host),
at a steady rate that does not saturate the machine (the fast-path bench's clients: --rooms rooms
of --room-size members, each room half on each node, every member a sender):

1. --quiet s of the stack without clients (its own idle Redis CPU), then a warm-up of --warmup s
   at the rate, until its messages are stored;
2. quiet: --quiet s with every client connected and nobody sending: each component's idle CPU,
   Redis ops, bytes and CPU while idle (presence heartbeats, pings, polls);
3. steady: --rate msg/s for --duration s, then until every message is stored:
   - CPU per 1,000 deliveries/s per gateway node (its CPU over the send window / its deliveries:
     each node carries half of every room's members); every other component's CPU per message;
   - Redis ops per message by command (INFO commandstats deltas, the quiet rate taken off) and
     network bytes in and out per message (INFO stats total_net_input_bytes /
     total_net_output_bytes); one room's channel is sampled to size a fan-out frame copy, so the
     output can be scaled to more subscribed nodes per room than the two here;
   - Kafka bytes per message, producer side: the growth of the topic's log segments in the
     broker's log dir (lz4 batches as stored, replicated and fetched), and the records' key +
     value bytes read back (uncompressed);
   - PostgreSQL bytes per stored row (every table and index of the schema);
4. spread: the same rate in rooms of 2, one member on each node, only gateway-1's members
   sending: gateway-2's CPU per message is one pub/sub copy received and written to one socket,
   gateway-1's surplus is one send taken in; together they give the CPU per delivery when each
   of a room's members is on a node of its own (a large fleet), which the steady layout (5
   members of a room per node) cannot show; --quiet s idle before it give, with the other two
   idle windows, Redis CPU per presence heartbeat script (one per room and node) of 1 member
   and of room-size / 2 members;
5. persist: the persist function alone over --records records through Kafka (bench.functions):
   rows/s, and rows per CPU-second of PostgreSQL and of the persist host (this process);
6. message function alone over --records sends (bench.functions): records/s of one consumer,
   the ceiling of one inbound stream partition.

Memory per idle socket is an input (--socket-kb, default 17 KB, measured by
``python -m bench sockets``). Prints every figure with its unit, writes them as JSON (--out).
Loopback only; bounded in load and time (a few minutes); prints progress; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.fastpath import (
    Load,
    Phase,
    cpu_ticks,
    machine_ticks,
    own_cpu,
    pct,
    raised_rate_limits,
    wait_stored,
)
from bench.functions import deps_for, message_alone, persist_alone
from bench.realtime import raise_fd_limit, say
from bench.stack import private_stack
from chat import frames, names
from chat.settings import Settings
from devstack.stack import Stack
from functions.registry import REGISTRY
from functions.triggers import KafkaTopic

_TICK = os.sysconf("SC_CLK_TCK")
MAX_RATE = 2_000
MAX_CLIENTS = 1_000
# Our own INFO calls and the sampler's subscription are not the system's work.
_OWN_COMMANDS = {"info", "ssubscribe", "sunsubscribe"}
_SIZE_SQL = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm')
"""


# ----- meters -----


class CpuMeter:
    """CPU seconds of stack processes (with their children) and of this process, over a window."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, int] = {}
        self.own = self.started = 0.0
        self.machine = (0, 0)

    def start(self) -> None:
        self.before = {n: cpu_ticks(p) for n, p in self.pids.items()}
        self.own, self.started, self.machine = own_cpu(), time.monotonic(), machine_ticks()

    def stop(self) -> tuple[dict[str, float], float, float]:
        """(CPU seconds per name, "bench" being this process; wall seconds; machine busy %)."""
        cpu = {n: (cpu_ticks(p) - self.before[n]) / _TICK for n, p in self.pids.items()}
        cpu["bench"] = own_cpu() - self.own
        busy, total = (a - b for a, b in zip(machine_ticks(), self.machine, strict=True))
        machine_pct = 100 * (os.cpu_count() or 1) * busy / max(total, 1)
        return cpu, time.monotonic() - self.started, machine_pct


@dataclass(slots=True)
class RedisCounters:
    """Cumulative Redis counters at one moment."""

    at: float
    net_in: int
    net_out: int
    calls: dict[str, int]
    usec: dict[str, int]
    memory: int
    # used_cpu_user + used_cpu_sys of the server (getrusage: microseconds, not clock ticks)
    cpu: float

    @classmethod
    def read(cls, client: redis.Redis) -> RedisCounters:
        stats: Any = client.info("stats")
        commands: Any = client.info("commandstats")
        memory: Any = client.info("memory")
        cpu: Any = client.info("cpu")
        calls, usec = {}, {}
        for key, value in commands.items():
            name = key.removeprefix("cmdstat_")
            if name not in _OWN_COMMANDS:
                calls[name], usec[name] = int(value["calls"]), int(value["usec"])
        return cls(
            time.monotonic(),
            int(stats["total_net_input_bytes"]),
            int(stats["total_net_output_bytes"]),
            calls,
            usec,
            int(memory["used_memory"]),
            float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        )

    def since(self, earlier: RedisCounters) -> RedisCounters:
        """The growth from ``earlier`` to this one (``at`` becomes the seconds between)."""
        return RedisCounters(
            self.at - earlier.at,
            self.net_in - earlier.net_in,
            self.net_out - earlier.net_out,
            {n: c - earlier.calls.get(n, 0) for n, c in self.calls.items()},
            {n: u - earlier.usec.get(n, 0) for n, u in self.usec.items()},
            self.memory - earlier.memory,
            self.cpu - earlier.cpu,
        )

    def less(self, quiet: RedisCounters) -> RedisCounters:
        """This growth without what ``quiet`` (a growth) does in as many seconds."""
        k = self.at / quiet.at if quiet.at else 0.0
        return RedisCounters(
            self.at,
            self.net_in - round(k * quiet.net_in),
            self.net_out - round(k * quiet.net_out),
            {n: c - round(k * quiet.calls.get(n, 0)) for n, c in self.calls.items()},
            {n: u - round(k * quiet.usec.get(n, 0)) for n, u in self.usec.items()},
            self.memory,
            self.cpu - k * quiet.cpu,
        )


def push_bytes(channel: bytes, payload: int) -> int:
    """Bytes of one sharded pub/sub message as Redis writes it to a subscriber (RESP2 or 3)."""
    parts = (b"smessage", channel)
    head = sum(len(f"${len(p)}\r\n") + len(p) + 2 for p in parts)
    return len("*3\r\n") + head + len(f"${payload}\r\n") + payload + 2


class ChannelSample(threading.Thread):
    """One more subscriber of one room's channel: the size of a fan-out frame copy."""

    def __init__(self, url: str, room: str) -> None:
        super().__init__(daemon=True)
        self.channel = names.room_channel(room).encode()
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.ssubscribe(self.channel)
        self.copies = self.copy_bytes = self.packet_bytes = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            message = self.pubsub.get_sharded_message(timeout=0.2)
            if message and message["type"] == "smessage":
                data: bytes = message["data"]
                self.copies += 1
                self.copy_bytes += push_bytes(self.channel, len(data))
                self.packet_bytes += len(frames.decode_frame(data).packet.encode())

    def stop(self) -> None:
        self.halt.set()
        self.join(5)
        self.pubsub.close()
        self.client.close()


def kafka_log_bytes(stack: Stack, topic: str) -> int:
    """Bytes of the topic's log segments in the broker's log dir (indexes not counted)."""
    data = stack.state_dir / "kafka" / "data"
    return sum(f.stat().st_size for f in data.glob(f"{topic}-*/*.log"))


def kafka_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> high watermark."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-capacity"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


def kafka_record_bytes(
    bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int]
) -> tuple[int, int]:
    """(records, key + value bytes) between two sets of offsets, read back uncompressed."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-capacity", "enable.auto.commit": False}
    )
    todo = {p: e for p, e in end.items() if e > start.get(p, 0)}
    consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in todo])
    records = size = 0
    deadline = time.monotonic() + 60
    try:
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                p, offset = m.partition(), m.offset()
                if m.error() is not None or p is None or offset is None or p not in todo:
                    continue
                if offset < todo[p]:
                    records += 1
                    size += len(m.key() or b"") + len(m.value() or b"")
                if offset + 1 >= todo[p]:
                    del todo[p]
    finally:
        consumer.close()
    if todo:
        raise RuntimeError(f"Kafka read-back incomplete after 60s (partitions {sorted(todo)})")
    return records, size


def database_bytes(dsn: str) -> int:
    """Bytes of every table, index and TOAST of the schema."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(_SIZE_SQL).fetchone()
    return int(row[0]) if row else 0


# ----- the parts -----


@dataclass(slots=True)
class Figures:
    """Every figure, with its unit in its name."""

    values: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, value: Any, line: str | None = None) -> None:
        self.values[key] = value
        if line is not None:
            say(f"  {line}")


def idle_window(
    stack: Stack, client: redis.Redis, seconds: float
) -> tuple[RedisCounters, dict[str, float]]:
    """Nobody sends for ``seconds``: the Redis growth and each component's CPU (% of a core)."""
    meter = CpuMeter(stack.endpoints()["pids"])
    before = RedisCounters.read(client)
    meter.start()
    time.sleep(seconds)
    cpu, wall, _ = meter.stop()
    grown = RedisCounters.read(client).since(before)
    return grown, {n: round(100 * v / wall, 2) for n, v in cpu.items() if n != "bench"}


def quiet(stack: Stack, client: redis.Redis, sockets: int, seconds: float, out: Figures) -> Any:
    """Everyone connected, nobody sending: idle CPU and Redis traffic; the quiet growth."""
    say(f"[2/6] quiet: {sockets} idle sockets for {seconds:.0f}s (nobody sends)")
    grown, idle_pct = idle_window(stack, client, seconds)
    out.put("quiet_cpu_pct_of_core", idle_pct, f"idle CPU, % of one core: {_parts(idle_pct)}")
    ops = sum(grown.calls.values())
    out.put(
        "quiet_redis_ops_per_socket_s",
        round(ops / grown.at / sockets, 4),
        f"Redis while idle: {ops / grown.at:.1f} ops/s = {ops / grown.at / sockets:.4f} ops/s "
        f"per idle socket ({_parts(_per(grown.calls, grown.at), 1)})",
    )
    out.put(
        "quiet_redis_bytes_per_socket_s",
        {
            "in": round(grown.net_in / grown.at / sockets, 1),
            "out": round(grown.net_out / grown.at / sockets, 1),
        },
        f"Redis network while idle: {grown.net_in / grown.at / sockets:.1f} B/s in, "
        f"{grown.net_out / grown.at / sockets:.1f} B/s out per idle socket",
    )
    out.put(
        "quiet_redis_cpu_us_s",
        round(1e6 * grown.cpu / grown.at),
        f"Redis CPU while idle (INFO cpu): {1e6 * grown.cpu / grown.at:.0f} us per second",
    )
    return grown


def presence_cost(
    args: argparse.Namespace, heartbeat_s: float, cpu_us_s: dict[str, float], out: Figures
) -> None:
    """Redis CPU per presence heartbeat script (one per room and node every heartbeat_s)."""
    scripts_s = args.rooms * 2 / heartbeat_s
    base = cpu_us_s["no clients"]
    per = {
        "members_1": round((cpu_us_s["rooms of 2"] - base) / scripts_s, 1),
        f"members_{args.room_size // 2}": round((cpu_us_s["steady layout"] - base) / scripts_s, 1),
    }
    out.put(
        "presence_redis_cpu_us_per_heartbeat_script",
        per,
        f"Redis CPU per presence heartbeat script ({scripts_s:.1f} scripts/s: {args.rooms} rooms "
        f"x 2 nodes every {heartbeat_s:.0f} s; idle CPU of the stack without clients, "
        f"{base:.0f} us/s, taken off): {_parts(per, 1)} us",
    )


def spread(
    stack: Stack, client: redis.Redis, args: argparse.Namespace, run_id: str, out: Figures
) -> float:
    """Rooms of 2, one member per node, only node 1's members sending: the cost of one pub/sub
    copy (received and written to its one member) apart from the cost of one send's intake."""
    layout = argparse.Namespace(**{**vars(args), "room_size": 2})
    say(
        f"[4/6] spread: {args.rooms} rooms of 2 (one member per node), only gateway-1's members "
        f"send, {args.rate} msg/s for {args.duration:.0f}s"
    )
    load = Load(stack.endpoints()["ws_urls"], layout, run_id, send_from=(0,))
    try:
        say(f"  {args.rooms * 2} idle sockets for {args.quiet:.0f}s first (nobody sends)")
        grown, _ = idle_window(stack, client, args.quiet)
        idle_us_s = 1e6 * grown.cpu / grown.at
        pids = lambda: stack.endpoints()["pids"]  # noqa: E731
        phase = load.phase("spread", args.rate, args.duration, grace=args.grace, pids=pids)
    finally:
        load.close()
    say(phase.line())
    msgs = max(phase.acked, 1)
    # Both nodes receive each message once and write it to one socket; gateway-1 also takes
    # in every send (rate limits, append, ack).
    copy = 1000 * phase.cpu_s["gateway-2"] / msgs
    intake = 1000 * (phase.cpu_s["gateway-1"] - phase.cpu_s["gateway-2"]) / msgs
    fan = args.room_size
    out.put(
        "gateway_vcpu_per_1000_copies_s",
        round(copy, 4),
        f"gateway CPU per 1,000 pub/sub copies/s, each written to one member (gateway-2, which "
        f"takes no sends; p99 {pct(phase.latency, 0.99)} ms): {copy:.4f} vCPU",
    )
    out.put(
        "gateway_vcpu_per_1000_sends_s",
        round(intake, 4),
        f"gateway CPU per 1,000 sends/s taken in (gateway-1 less gateway-2): {intake:.4f} vCPU",
    )
    out.put(
        "gateway_vcpu_per_1000_deliveries_s_every_member_on_its_own_node",
        round(copy + intake / fan, 4),
        f"so with each of a room's {fan} members on a node of its own (a large fleet): "
        f"{copy:.4f} + {intake:.4f} / {fan} = {copy + intake / fan:.4f} vCPU per 1,000 "
        f"deliveries/s",
    )
    return idle_us_s


def steady(
    stack: Stack,
    load: Load,
    client: redis.Redis,
    quiet_growth: RedisCounters,
    stored_before: int,
    args: argparse.Namespace,
    out: Figures,
) -> None:
    """The steady rate: CPU per delivery, Redis and Kafka per message, bytes per row."""
    topic = names.MESSAGES_TOPIC
    bootstrap = stack.kafka_bootstrap
    dsn = stack.postgres_dsn
    say(f"[3/6] steady: {args.rate} msg/s for {args.duration:.0f}s, then until all are stored")
    sample = ChannelSample(stack.redis_url, load.rooms[0])
    sample.start()
    offsets = kafka_offsets(bootstrap, topic)
    disk, rows_bytes = kafka_log_bytes(stack, topic), database_bytes(dsn)
    redis_before = RedisCounters.read(client)
    pids = lambda: stack.endpoints()["pids"]  # noqa: E731
    phase = load.phase("steady", args.rate, args.duration, grace=args.grace, pids=pids)
    say(phase.line())
    target = stored_before + phase.acked
    rows, waited = wait_stored(dsn, load.run_id, target, args.drain_timeout)
    say(f"  stored {rows}/{target} rows of the run ({waited:.1f}s after the last delivery)")
    grown = RedisCounters.read(client).since(redis_before)
    sample.stop()
    _key_sizes(client, load.rooms[0], out)
    disk = kafka_log_bytes(stack, topic) - disk
    rows_bytes = database_bytes(dsn) - rows_bytes
    records, record_bytes = kafka_record_bytes(
        bootstrap, topic, offsets, kafka_offsets(bootstrap, topic)
    )
    _steady_figures(phase, grown.less(quiet_growth), sample, args, out)
    out.put(
        "kafka_bytes_per_message",
        {
            "on_disk": round(disk / max(records, 1), 1),
            "records_uncompressed": round(record_bytes / max(records, 1), 1),
            "records": records,
            "messages": phase.acked,
        },
        f"Kafka ({topic}), producer side: {disk / max(records, 1):.1f} B per message in the "
        f"broker's log segments (lz4 batches, as stored, replicated and fetched); "
        f"{record_bytes / max(records, 1):.1f} B of key + value uncompressed ({records} records "
        f"for {phase.acked} messages)",
    )
    out.put(
        "postgres_bytes_per_row",
        round(rows_bytes / max(rows - stored_before, 1), 1),
        f"PostgreSQL: {rows_bytes / max(rows - stored_before, 1):.0f} B per stored row, tables + "
        f"indexes ({rows - stored_before} rows, {args.text_bytes}-byte texts; page-granular)",
    )
    if rows < target:
        raise RuntimeError(f"only {rows}/{target} messages stored: the figures are incomplete")


def _key_sizes(client: redis.Redis, room: str, out: Figures) -> None:
    """MEMORY USAGE of one room's dedup keys and of its recent log per entry."""
    pattern = names.dedup_key(room, "*")
    keys = list(itertools.islice(client.scan_iter(match=pattern, count=1000), 100))
    dedup = sum(int(client.memory_usage(k) or 0) for k in keys) / max(len(keys), 1)
    log = names.recent_log_key(room)
    entries = int(client.xlen(log))
    per_entry = int(client.memory_usage(log, samples=0) or 0) / max(entries, 1)
    out.put(
        "redis_key_bytes",
        {"dedup_key": round(dedup), "recent_log_entry": round(per_entry)},
        f"Redis MEMORY USAGE: a dedup key {dedup:.0f} B ({len(keys)} sampled), a recent-log "
        f"entry {per_entry:.0f} B ({entries} in one room's log)",
    )


def _steady_figures(
    phase: Phase,
    net: RedisCounters,
    sample: ChannelSample,
    args: argparse.Namespace,
    out: Figures,
) -> None:
    msgs = max(phase.acked, 1)
    p99 = pct(phase.latency, 0.99)
    out.put(
        "steady",
        {
            "rate_msg_s": args.rate,
            "seconds": round(phase.seconds, 1),
            "sent": phase.sent,
            "acked": phase.acked,
            "deliveries": phase.deliveries,
            "expected": phase.expected,
            "lost": phase.lost,
            "duplicated": phase.duplicated,
            "p50_ms": pct(phase.latency, 0.5),
            "p99_ms": p99,
            "machine_busy_pct_of_core": round(phase.machine_pct, 1),
            "cpu_pressure_pct": phase.pressure,
            "generators_pct_of_core": round(phase.gen_pct, 1),
        },
    )
    if p99 is None or p99 > args.p99_warn:
        say(
            f"  warning: delivery p99 {p99} ms > {args.p99_warn:.0f} ms: the machine saturated "
            f"or other work ran; lower --rate for figures that are costs, not queueing"
        )
    cores = os.cpu_count() or 1
    say(
        f"  machine {phase.machine_pct:.0f} % busy of one core ({100 * cores} % is all), CPU "
        f"pressure {phase.pressure} %, generators {phase.gen_pct:.0f} % of a core"
    )
    per_node = phase.expected / 2
    gateways = {n: v for n, v in phase.cpu_s.items() if n.startswith("gateway-")}
    vcpu = {n: round(1000 * v / max(per_node, 1), 4) for n, v in gateways.items()}
    out.put(
        "gateway_vcpu_per_1000_deliveries_s",
        vcpu,
        f"gateway CPU per 1,000 deliveries/s (per node, {per_node:.0f} deliveries each, "
        f"its share of the intake included): {_parts(vcpu, 4)} vCPU",
    )
    out.put("gateway_cpu_pct_of_core", {n: phase.cpu[n] for n in gateways})
    others = {
        n: round(1e6 * v / msgs, 1)
        for n, v in phase.cpu_s.items()
        if not n.startswith("gateway-") and n != "lb"
    }
    out.put(
        "cpu_us_per_message",
        others,
        f"CPU per message (us, {args.room_size} members each): {_parts(others, 1)}",
    )
    calls = {n: round(c / msgs, 3) for n, c in sorted(net.calls.items()) if c > 0}
    calls = {n: v for n, v in calls.items() if v >= 0.001}
    out.put(
        "redis_ops_per_message",
        {"total": round(sum(calls.values()), 2), "by_command": calls},
        f"Redis ops per message: {sum(calls.values()):.2f} ({_parts(calls, 3)}); commands a "
        f"script runs count under their own name as well as under evalsha",
    )
    cpu_us = 1e6 * net.cpu / msgs
    out.put(
        "redis_cpu_us_per_message",
        round(cpu_us, 1),
        f"Redis CPU per message (INFO cpu, the idle rate taken off): {cpu_us:.1f} us",
    )
    usec = {n: round(u / msgs, 1) for n, u in sorted(net.usec.items()) if u / msgs >= 0.1}
    out.put(
        "redis_command_us_per_message",
        {"by_command": usec},
        f"Redis command time per message (commandstats usec; evalsha includes the commands its "
        f"script runs, which also count under their names): {_parts(usec, 1)} us",
    )
    copy = sample.copy_bytes / max(sample.copies, 1)
    packet = sample.packet_bytes / max(sample.copies, 1)
    out_bytes = (net.net_out - sample.copy_bytes) / msgs
    out.put(
        "redis_bytes_per_message",
        {
            "in": round(net.net_in / msgs, 1),
            "out": round(out_bytes, 1),
            "out_per_subscribed_node": round(copy, 1),
            "subscribed_nodes": 2,
        },
        f"Redis network per message: {net.net_in / msgs:.0f} B in, {out_bytes:.0f} B out with "
        f"2 subscribed nodes per room; each more node subscribed to a room adds {copy:.0f} B "
        f"out (one frame copy; {sample.copies} sampled)",
    )
    out.put(
        "redis_memory_bytes_per_message",
        round(net.memory / msgs, 1),
        f"Redis memory kept per message (INFO used_memory growth: its dedup key, held "
        f"CHAT_DEDUP_TTL_S, and its recent-log entry, until a room's log is full): "
        f"{net.memory / msgs:.0f} B",
    )
    out.put(
        "delivery_packet_bytes",
        round(packet, 1),
        f"Socket.IO packet per delivery (before WebSocket framing): {packet:.0f} B",
    )


async def functions_alone(stack: Stack, records: int, out: Figures) -> None:
    """Persist rows per core and the message function's records/s, each on its own."""
    deps = deps_for(stack)
    fn = REGISTRY["persist"]
    trigger = fn.trigger
    assert isinstance(trigger, KafkaTopic)
    pids = stack.endpoints()["pids"]
    meter = CpuMeter({"postgres": pids["postgres"], "kafka": pids["kafka"]})
    at_start: list[int] = []

    def first_row(rows: int) -> None:
        at_start.append(rows)
        meter.start()

    try:
        say(f"[5/6] persist function alone over {records} records (bench.functions)")
        await persist_alone(deps, records, first_row)
        cpu, wall, machine = meter.stop()
        rows = records - at_start[0]
        host = cpu["bench"]
        out.put(
            "persist",
            {
                "rows_s": round(rows / wall),
                "rows_per_core_s": round(rows / (cpu["postgres"] + host)),
                "rows_per_postgres_core_s": round(rows / max(cpu["postgres"], 1e-9)),
                "postgres_cpu_pct_of_core": round(100 * cpu["postgres"] / wall, 1),
                "host_cpu_pct_of_core": round(100 * host / wall, 1),
                "kafka_cpu_pct_of_core": round(100 * cpu["kafka"] / wall, 1),
                "batch_size": trigger.batch_size,
                "concurrency": fn.concurrency,
                # One runner's time per full batch: Lambda's duration per invocation, roughly.
                "batch_s": round(trigger.batch_size * fn.concurrency * wall / rows, 3),
                "machine_busy_pct_of_core": round(machine, 1),
            },
            f"persist: {rows / wall:,.0f} rows/s; {rows / (cpu['postgres'] + host):,.0f} rows per "
            f"CPU-second of PostgreSQL + the persist host, {rows / max(cpu['postgres'], 1e-9):,.0f}"
            f" per PostgreSQL CPU-second (PostgreSQL {100 * cpu['postgres'] / wall:.0f} %, host "
            f"{100 * host / wall:.0f} %, Kafka {100 * cpu['kafka'] / wall:.0f} % of a core)",
        )
        say(f"[6/6] message function alone over {records} sends, one consumer (bench.functions)")
        rate = await message_alone(deps, records)
        out.put(
            "message_function_records_s_per_consumer",
            round(rate),
            f"message function: {rate:,.0f} records/s with one consumer (one inbound partition)",
        )
    finally:
        await deps.aclose()


def _per(counts: dict[str, int], seconds: float) -> dict[str, float]:
    return {n: c / seconds for n, c in counts.items() if c > 0}


def _parts(values: dict[str, float], digits: int = 1) -> str:
    ordered = sorted(values.items(), key=lambda i: -i[1])
    return ", ".join(f"{n} {v:.{digits}f}" for n, v in ordered)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every part on one private stack, in order; the figures."""
    out = Figures()
    out.put(
        "inputs",
        {
            "socket_kb": args.socket_kb,
            "rooms": args.rooms,
            "room_size": args.room_size,
            "text_bytes": args.text_bytes,
            "cores": os.cpu_count(),
        },
    )
    out.put(
        "memory_per_idle_socket_kb",
        args.socket_kb,
        f"memory per idle socket: {args.socket_kb} KB (an input: --socket-kb; "
        f"python -m bench sockets measures it)",
    )
    run_id = uuid.uuid4().hex[:8]
    with raised_rate_limits(), private_stack(gateways=2, function_hosts=1) as stack:
        client = redis.Redis.from_url(stack.redis_url)
        sockets = args.rooms * args.room_size
        try:
            say(f"[1/6] the stack without clients for {args.quiet:.0f}s (its own idle CPU)")
            bare, _ = idle_window(stack, client, args.quiet)
            idle_us_s = {"no clients": 1e6 * bare.cpu / bare.at}
            say(
                f"  then {sockets} clients in {args.rooms} rooms of {args.room_size} over 2 "
                f"nodes; warm-up {args.warmup:.0f}s at {args.rate} msg/s"
            )
            load = Load(stack.endpoints()["ws_urls"], args, run_id)
            try:
                warm = load.phase("warm-up", args.rate, args.warmup, grace=args.grace)
                say(warm.line())
                wait_stored(stack.postgres_dsn, run_id, warm.acked, args.drain_timeout)
                growth = quiet(stack, client, sockets, args.quiet, out)
                idle_us_s["steady layout"] = 1e6 * growth.cpu / growth.at
                steady(stack, load, client, growth, warm.acked, args, out)
            finally:
                load.close()
            idle_us_s["rooms of 2"] = spread(stack, client, args, f"{run_id}s", out)
        finally:
            client.close()
        heartbeat = Settings.from_env(stack.env(), environment="test").presence_heartbeat_s
        presence_cost(args, heartbeat, idle_us_s, out)
        asyncio.run(functions_alone(stack, args.records, out))
    return out.values


def main(argv: list[str] | None = None) -> int:
    """Parse the options, measure, print the figures and write them as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--rate", type=int, default=300, help="steady msg/s in total (default 300)")
    add("--duration", type=float, default=20, help="seconds at the steady rate (default 20)")
    add("--warmup", type=float, default=5, help="seconds of warm-up at the rate (default 5)")
    add("--quiet", type=float, default=15, help="seconds of the idle window (default 15)")
    add("--rooms", type=int, default=20)
    add("--room-size", type=int, default=10, help="members per room, half on each node (even)")
    add("--text-bytes", type=int, default=64)
    add("--records", type=int, default=10_000, help="records of the functions-alone runs")
    add(
        "--socket-kb",
        type=float,
        default=17.0,
        help="memory per idle socket in KB (default 17; python -m bench sockets measures it)",
    )
    add("--p99-warn", type=float, default=250, help="warn when the steady p99 exceeds this (ms)")
    add("--grace", type=float, default=5, help="seconds after a phase for its deliveries")
    add("--drain-timeout", type=float, default=90, help="longest wait for PostgreSQL (s)")
    add("--out", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.rate <= MAX_RATE:
        parser.error(f"--rate must be in 1..{MAX_RATE}")
    if args.room_size < 2 or args.room_size % 2 or args.rooms * args.room_size > MAX_CLIENTS:
        parser.error(f"--room-size must be even, rooms x room size at most {MAX_CLIENTS}")
    if not 48 <= args.text_bytes <= 4000:
        parser.error("--text-bytes must be in 48..4000")
    if not all(0 < t <= 120 for t in (args.duration, args.warmup, args.quiet)):
        parser.error("--duration, --warmup and --quiet must be in (0, 120] s")
    if not 1_000 <= args.records <= 100_000 or not 1 <= args.socket_kb <= 1_000:
        parser.error("--records must be in 1000..100000, --socket-kb in 1..1000")
    if args.out and not args.out.resolve().parent.is_dir():
        parser.error(f"--out {args.out}: its directory does not exist; create it or pick another")
    say(f"capacity: {os.cpu_count()} cores, fd limit {raise_fd_limit()}")
    started = time.monotonic()
    figures = run(args)
    figures["bench_seconds"] = round(time.monotonic() - started)
    text = json.dumps(figures, indent=2)
    print("\n== capacity figures (one run on this machine)\n" + text, flush=True)
    if args.out:
        args.out.write_text(text + "\n")
        say(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
