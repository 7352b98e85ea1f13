"""Per-room fan-out: a node subscribes to the sharded channels of the rooms it has members in.

The message function publishes each message once, as a ready Socket.IO packet, on its room's
channel (``chat.frames``); gateways publish presence and typing the same way. A node writes the
packet of each frame to every local member of the room as it is: nothing is decoded or encoded
per node or per socket.

Order and completeness: a room's frames arrive in seq order on its channel. The node keeps the
last event seq it delivered per room; a frame past the next expected seq (the subscription was
lost and restored, e.g. Redis restarted) is preceded by the missing events read from the
room's recent log, and a frame already delivered is dropped. So a member never misses a seq
silently: what the capped log no longer holds shows as a jump the client repairs from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import socketio
from engineio import packet as eio_packet

from chat import frames, names
from chat.shards import Shards
from realtime import metrics

log = logging.getLogger("realtime.fanout")

# How long a join waits for its room's subscription before it answers unavailable.
SUBSCRIBE_TIMEOUT_S = 5.0
# The subscription connection is pinged this often; no answer for two rounds: reconnect.
_PING_EVERY_S = 5.0
_RECONNECT_BASE_S = 0.1
_RECONNECT_CAP_S = 5.0
# Slow-consumer closes in flight (the loop keeps only weak references to tasks).
_CLOSING: set[asyncio.Task[None]] = set()


class PacketWriter:
    """Writes pre-encoded Socket.IO packets to this node's sockets.

    python-socketio has no public call that sends an already encoded packet to many sockets, so
    this is the one place that reaches into python-engineio: it puts one shared Engine.IO MESSAGE
    packet on each socket's outgoing queue, which the socket's own writer drains in order with
    everything else (acks, pings). The behaviour is pinned by a test against the installed
    python-socketio and python-engineio.
    """

    def __init__(self, sio: socketio.AsyncServer, max_queued: int = 1000) -> None:
        self.sio = sio
        # A socket whose queue holds this many packets has stopped reading: it is cut off.
        self.max_queued = max_queued
        self._cut: set[str] = set()

    @staticmethod
    def engineio_packet(packet: str) -> eio_packet.Packet:
        """The Engine.IO MESSAGE packet carrying a Socket.IO packet."""
        return eio_packet.Packet(eio_packet.MESSAGE, data=packet)

    def members(self, sio_room: str) -> dict[str, str]:
        """Socket.IO sid -> Engine.IO sid of this node's sockets in a Socket.IO room."""
        rooms: dict[str, dict[str, str]] = self.sio.manager.rooms.get("/", {})
        return rooms.get(sio_room) or {}

    def write(self, eio_sid: str, pkt: eio_packet.Packet) -> bool:
        """Queue ``pkt`` for one socket; False when the socket is gone or closing."""
        socket = self.sio.eio.sockets.get(eio_sid)
        if socket is None or socket.closed or socket.closing:
            return False
        if socket.queue.qsize() >= self.max_queued:
            self.cut_off(eio_sid, socket)
            return False
        socket.queue.put_nowait(pkt)
        return True

    def cut_off(self, eio_sid: str, socket: Any) -> None:
        """Disconnect a slow consumer: its backlog is dropped, nobody else waits for it.

        Its writer is blocked on a full connection, so the connection itself is aborted when the
        ASGI server exposes it (uvicorn does); the Engine.IO close then runs the usual
        disconnect (presence, rooms) with the reason ``slow_consumer``.
        """
        if eio_sid in self._cut:
            return
        self._cut.add(eio_sid)
        metrics.SLOW_CONSUMERS.inc()
        metrics.ERRORS.labels("slow_consumer").inc()
        log.warning(
            "cut off a slow consumer",
            extra={"eio_sid": eio_sid, "queued": socket.queue.qsize(), "reason": "slow_consumer"},
        )
        abort_websocket(self.sio, eio_sid)

        async def close() -> None:
            try:
                await socket.close(wait=False, abort=True, reason="slow_consumer")
            finally:
                self._cut.discard(eio_sid)

        task = asyncio.get_running_loop().create_task(close())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    def write_to(self, sid: str, packet: str) -> bool:
        """Queue a Socket.IO packet for one socket of this node, by its Socket.IO sid."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        return eio_sid is not None and self.write(eio_sid, self.engineio_packet(packet))


def abort_websocket(sio: socketio.AsyncServer, eio_sid: str) -> bool:
    """Abort the WebSocket connection of an Engine.IO session at once, buffered data and all.

    A close would wait for a peer that does not read. The connection is reached through the
    ASGI server's ``send`` (uvicorn's protocol object holds the transport); False when that
    is not possible (long-polling, another server): then only the Engine.IO close applies.
    """
    environ: dict[str, Any] = getattr(sio, "environ", {}).get(eio_sid) or {}
    if (environ.get("asgi.scope") or {}).get("type") != "websocket":
        return False
    transport = getattr(getattr(environ.get("asgi.send"), "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    return True


@dataclass(slots=True)
class _Room:
    """A room this node carries: its channel, local sockets and delivery position."""

    room: str
    channel: str
    sockets: set[str] = field(default_factory=set)
    subscribed: asyncio.Future[None] | None = None
    # Last message seq delivered here; ``floor`` is the seq the first local join reported.
    last_seq: int | None = None
    floor: int = 0
    # sid -> frames held while that socket replays the recent log
    holds: dict[str, list[frames.Frame]] = field(default_factory=dict)
    # The node whose subscription link carries the room's channel.
    link: str = ""

    @property
    def expected(self) -> int:
        """The next message seq this node should deliver."""
        return max(self.last_seq or 0, self.floor) + 1


class _Link:
    """One subscription connection to one Redis node, carrying the channels that node owns.

    No timeout on reads (it idles between frames), liveness by pings instead; RESP2, so a
    subscribed connection answers with plain arrays, read in order.
    """

    def __init__(self, fanout: RoomFanout, address: str) -> None:
        self.fanout = fanout
        self.address = address
        self.channels: set[str] = set()
        self._pool = aioredis.ConnectionPool.from_url(
            fanout.shards.url_for(address),
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=None,
            socket_keepalive=True,
            max_connections=2,
            protocol=2,
        )
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._last_reply = time.monotonic()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read_forever(), name=f"fanout-{self.address}")
            self._pinger = asyncio.create_task(self._ping_forever(), name="fanout-ping")

    async def stop(self) -> None:
        for task in (self._pinger, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._pinger = None
        await self._close()
        await self._pool.aclose()

    async def send(self, *command: str) -> None:
        conn = self._conn
        if conn is None:
            return  # the reader subscribes every wanted channel when it (re)connects
        try:
            await conn.send_command(*command)
        except (OSError, aioredis.ConnectionError):
            # The reader notices the broken connection and resubscribes everything.
            log.warning("subscription command failed; the reader reconnects", exc_info=True)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def _connect(self) -> Any:
        conn: Any = self._pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()
        self._conn = conn
        self._last_reply = time.monotonic()
        # One channel per command: a cluster refuses channels of several slots in one.
        for channel in sorted(self.channels):
            await conn.send_command("SSUBSCRIBE", channel)
        return conn

    async def _read_forever(self) -> None:
        failures = 0
        while self.channels or not failures:
            try:
                conn = await self._connect()
                if failures:
                    log.info(
                        "room subscriptions restored",
                        extra={"rooms": len(self.channels), "node": self.address},
                    )
                failures = 0
                while True:
                    try:
                        reply = await conn.read_response()
                    except aioredis.ResponseError as exc:
                        # MOVED: a channel's slot is another node's now (a failover).
                        self._last_reply = time.monotonic()
                        log.info("subscription redirected: %s", exc, extra={"node": self.address})
                        await self.fanout._reroute(self)
                        continue
                    self._last_reply = time.monotonic()
                    await self.fanout._on_reply(self, reply)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                metrics.FANOUT_RECONNECTS.inc()
                await self._close()
                self.fanout._lost(self)
                delay = min(_RECONNECT_CAP_S, _RECONNECT_BASE_S * 2 ** min(failures - 1, 6))
                log.warning(
                    "room subscription connection lost; reconnecting in %.1fs",
                    delay,
                    exc_info=failures == 1,
                    extra={"rooms": len(self.channels), "failures": failures, "node": self.address},
                )
                await asyncio.sleep(delay)
                # The node may be gone for good (a failover): rooms follow their slots' owner
                # (the reroute reads the slot map again).
                await self.fanout._reroute(self)

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(_PING_EVERY_S)
            if self._conn is None:
                continue
            if time.monotonic() - self._last_reply > 2 * _PING_EVERY_S + 1:
                log.warning("room subscription connection silent; reconnecting")
                await self._close()
                continue
            await self.send("PING")


class RoomFanout:
    """This node's room subscriptions and the delivery of their frames to local members.

    Each room's channel is subscribed on the node owning its slot (the one Redis, or a cluster
    primary), one connection per such node; when a node fails or a slot moves, its rooms are
    subscribed again where their slot lives now and repaired from their recent logs.
    """

    def __init__(self, shards: Shards, writer: PacketWriter) -> None:
        self.shards = shards
        self.redis: Any = shards.client
        self.writer = writer
        self._rooms: dict[str, _Room] = {}
        self._by_channel: dict[str, _Room] = {}
        self._links: dict[str, _Link] = {}
        self._started = False
        # Called with the packet of each op frame (an op's outcome): never delivered to sockets.
        self.on_op: Callable[[str], None] | None = None

    # ----- lifecycle -----

    def start(self) -> None:
        """Start the subscription readers (idempotent)."""
        self._started = True
        for link in self._links.values():
            link.start()

    async def stop(self) -> None:
        """Stop reading and close the subscription connections."""
        self._started = False
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.stop()

    def _link(self, address: str) -> _Link:
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = _Link(self, address)
        if self._started:
            link.start()
        return link

    # ----- subscriptions -----

    async def add(self, room: str, sid: str) -> None:
        """Count ``sid`` as a local member; return once the room's frames reach this node."""
        state = self._rooms.get(room)
        if state is None:
            state = _Room(room=room, channel=names.room_channel(room))
            state.subscribed = asyncio.get_running_loop().create_future()
            self._rooms[room] = state
            self._by_channel[state.channel] = state
            link = self._link(await self.shards.owner(state.channel))
            state.link = link.address
            link.channels.add(state.channel)
            await link.send("SSUBSCRIBE", state.channel)
        state.sockets.add(sid)
        if state.subscribed is not None and not state.subscribed.done():
            try:
                await asyncio.wait_for(asyncio.shield(state.subscribed), SUBSCRIBE_TIMEOUT_S)
            except TimeoutError:
                self.remove(room, sid)
                raise

    def set_floor(self, room: str, seq: int) -> None:
        """Record the room's last seq as a local join reported it (where repairs start)."""
        state = self._rooms.get(room)
        if state is not None and state.last_seq is None and seq > state.floor:
            state.floor = seq

    def remove(self, room: str, sid: str) -> None:
        """Stop counting ``sid``; the room's last local member leaving unsubscribes."""
        state = self._rooms.get(room)
        if state is None:
            return
        state.sockets.discard(sid)
        state.holds.pop(sid, None)
        if state.sockets:
            return
        del self._rooms[room]
        self._by_channel.pop(state.channel, None)
        if state.subscribed is not None and not state.subscribed.done():
            state.subscribed.cancel()
        link = self._links.get(state.link)
        if link is not None:
            link.channels.discard(state.channel)
            task = asyncio.get_running_loop().create_task(link.send("SUNSUBSCRIBE", state.channel))
            task.add_done_callback(_log_failure)

    def _lost(self, link: _Link) -> None:
        """A link's connection broke: its rooms are confirmed (and repaired) again later."""
        for channel in link.channels:
            state = self._by_channel.get(channel)
            if state is not None and (state.subscribed is None or state.subscribed.done()):
                state.subscribed = None

    async def _reroute(self, link: _Link) -> None:
        """Move the link's rooms whose slot another node owns now to that node's link."""
        await self.shards.refresh()
        for channel in sorted(link.channels):
            state = self._by_channel.get(channel)
            owner = await self.shards.owner(channel)
            if state is None or owner == link.address:
                continue
            link.channels.discard(channel)
            if state.subscribed is None or state.subscribed.done():
                state.subscribed = None  # confirmed (and repaired) on the new node
            target = self._link(owner)
            state.link = owner
            target.channels.add(channel)
            await target.send("SSUBSCRIBE", channel)
        if not link.channels and link.address in self._links and not link.connected:
            del self._links[link.address]
            task = asyncio.get_running_loop().create_task(link.stop())
            task.add_done_callback(_log_failure)

    # ----- holds during replay -----

    def hold(self, room: str, sid: str) -> None:
        """Keep the room's live messages aside for ``sid`` while it replays the recent log."""
        state = self._rooms.get(room)
        if state is not None:
            state.holds[sid] = []

    def release(self, room: str, sid: str) -> list[frames.Frame]:
        """Stop holding; return what was held, in seq order."""
        state = self._rooms.get(room)
        return [] if state is None else state.holds.pop(sid, [])

    # ----- publishing -----

    async def publish(
        self, room: str, event: str, payload: object, skip: str | None = None
    ) -> None:
        """Send an event to the room's members on every node (this one included)."""
        frame = frames.encode_frame(event, frames.encode_event(event, payload), skip=skip)
        await self.redis.spublish(names.room_channel(room), frame)

    def emit_to(self, sid: str, event: str, payload: object) -> None:
        """Send an event to one socket of this node."""
        self.send_packet(sid, event, frames.encode_event(event, payload))

    def send_packet(self, sid: str, event: str, packet: str) -> None:
        """Send an already encoded packet to one socket of this node."""
        if self.writer.write_to(sid, packet):
            metrics.EVENTS_OUT.labels(event).inc()

    async def _on_reply(self, link: _Link, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == "sunsubscribe" and len(reply) >= 2 and reply[1] in link.channels:
            # The node gave the channel's slot up (a failover or a resharding) while we
            # still want it: follow the slot.
            state = self._by_channel.get(reply[1])
            if state is not None:
                if state.subscribed is None or state.subscribed.done():
                    state.subscribed = None
                await self._reroute(link)
                if state.link == link.address:
                    await link.send("SSUBSCRIBE", state.channel)
            return
        if kind == "smessage" and len(reply) == 3:
            state = self._by_channel.get(reply[1])
            if state is not None:
                await self._on_frame(state, reply[2])
        elif kind == "ssubscribe" and len(reply) >= 2:
            state = self._by_channel.get(reply[1])
            if state is None:
                return
            if state.subscribed is None:
                # Subscribed again after a lost connection: deliver what was missed meanwhile.
                state.subscribed = asyncio.get_running_loop().create_future()
                await self._repair(state, None)
            if not state.subscribed.done():
                state.subscribed.set_result(None)

    async def _on_frame(self, state: _Room, raw: str) -> None:
        try:
            frame = frames.decode_frame(raw)
        except frames.FrameError:
            log.warning("dropped a malformed fan-out frame", extra={"room": state.room})
            return
        if frame.event == frames.OP_EVENT:
            if self.on_op is not None:
                self.on_op(frame.packet)
            return
        if frame.seq is not None:
            if state.last_seq is not None and frame.seq <= state.last_seq:
                return  # already delivered (by a repair)
            if frame.seq > state.expected and state.last_seq is not None:
                # The listener alone delivers: the repair ends below this frame's seq.
                await self._repair(state, frame.seq - 1)
            state.last_seq = frame.seq
            _observe_latency(frame.packet)
        self._deliver(state, frame)

    def _deliver(self, state: _Room, frame: frames.Frame) -> None:
        members = self.writer.members(names.sio_room(state.room))
        if not members:
            return
        pkt = self.writer.engineio_packet(frame.packet)
        holds = state.holds
        sent = 0
        for sid, eio_sid in members.items():
            if sid == frame.skip:
                continue
            if holds and sid in holds and frame.seq is not None:
                holds[sid].append(frame)
                continue
            if self.writer.write(eio_sid, pkt):
                sent += 1
        if sent:
            metrics.EVENTS_OUT.labels(frame.event).inc(sent)

    async def _repair(self, state: _Room, upto: int | None) -> None:
        """Deliver the room's logged messages from the expected seq up to ``upto`` (None: all)."""
        start = state.expected
        redis: Any = self.redis
        try:
            entries: list[tuple[str, dict[str, str]]] = await redis.xrange(
                names.recent_log_key(state.room),
                frames.log_entry_id(start),
                "+" if upto is None else frames.log_entry_id(upto),
            )
        except Exception:
            log.warning("could not repair a room's gap", exc_info=True, extra={"room": state.room})
            return
        metrics.FANOUT_REPAIRED.inc(len(entries))
        for entry_id, fields in entries:
            frame = frames.log_entry_frame(entry_id, fields)
            assert frame.seq is not None
            if state.last_seq is not None and frame.seq <= state.last_seq:
                continue
            state.last_seq = frame.seq
            self._deliver(state, frame)


def _observe_latency(packet: str) -> None:
    accepted = frames.accepted_at(packet)
    if accepted is not None:
        metrics.FANOUT_LATENCY.observe(max(0.0, time.time() - accepted))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("unsubscribe failed", exc_info=task.exception())
