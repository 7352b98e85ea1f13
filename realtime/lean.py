"""What an idle socket costs: the per-socket objects of the WebSocket and Engine.IO layers, slimmed.

A gateway node holds thousands of sockets that do nothing but answer a ping every 20 s. With the
stock classes each cost 42 KB of resident memory (a bare python-socketio server on uvicorn: 41
KB), 39 KB of it traced Python objects. Measured with ``python -m bench sockets``, each cut's
effect at 1,000 sockets (resident memory per socket):

- ``LeanQueue``/``LeanEvent`` instead of ``asyncio.Queue``/``Event`` (each queue holds three
  deques and an Event, and an empty deque is 760 bytes; a socket had two queues and three
  events), ``LeanSocket``'s writer task running only while it has packets to send, no task and
  wait_for per received packet, and the ping from a timer instead of a sleeping task:
  42.2 -> 24.9 KB;
- the request's environ trimmed to what is read after the upgrade (its copy of every header):
  24.9 -> 20.7 KB;
- pings and read deadlines on one ``TimerWheel`` instead of a loop timer each: 20.7 -> 20.0 KB;
- websockets' upgrade request dropped (a fresh frame parser), no long-lived locals in the
  connection's frames: 20.0 -> 15.8 KB (at 10,000 sockets: 20.9 -> 17.0 KB, the bare server
  41.0 KB in the same run).

What is left is mostly uvicorn's protocol object and its ASGI scope, the coroutine frames of the
ASGI call chain (uvicorn, Socket.IO, Engine.IO), the transport, and the chat's own state.

Limits and guarantees are the stock ones: the frame size cap (uvicorn's ``ws_max_size`` and
Engine.IO's ``max_http_buffer_size``), the ping interval and timeout (a ping may go up to one
wheel tick early, a read deadline fire up to one tick late, never early), the outgoing queue the
slow-consumer cut measures, and the close and disconnect sequence.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import engineio
from engineio import async_socket
from engineio import packet as eio_packet
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol, State

log = logging.getLogger("realtime.lean")

# What is read of a WebSocket request's environ once it is upgraded: the ASGI connection (the
# Engine.IO WebSocket, the slow-consumer cut) and the request line.
_ENVIRON_KEPT = (
    "asgi.scope",
    "asgi.receive",
    "asgi.send",
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "REMOTE_ADDR",
)


class TimerWheel:
    """Callbacks due in whole ticks: one loop timer per tick that has any, none per socket.

    A loop timer costs about 550 bytes under uvloop; a socket's ping and read deadline are a
    list slot each here. ``early`` runs a callback up to one tick before its time (pings),
    otherwise up to one tick after it (deadlines: never before).
    """

    __slots__ = ("_ticks", "resolution")

    def __init__(self, resolution: float = 1.0) -> None:
        self.resolution = resolution
        self._ticks: dict[int, list[Callable[[], None]]] = {}

    def at(self, when: float, callback: Callable[[], None], *, early: bool) -> None:
        """Run ``callback`` at loop time ``when``, rounded to the tick."""
        tick = math.floor(when / self.resolution) if early else math.ceil(when / self.resolution)
        due = self._ticks.get(tick)
        if due is None:
            due = self._ticks[tick] = []
            asyncio.get_running_loop().call_at(tick * self.resolution, self._fire, tick)
        due.append(callback)

    def _fire(self, tick: int) -> None:
        for callback in self._ticks.pop(tick, ()):
            try:
                callback()
            except Exception:
                log.exception("timer callback failed")


class LeanEvent:
    """``asyncio.Event`` without a deque: its waiters list exists only while someone waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        """True once set, until cleared."""
        return self._value

    def set(self) -> None:
        """Set it and wake every waiter."""
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        """Unset it."""
        self._value = False

    async def wait(self) -> bool:
        """Return at once when set, else when it is set next."""
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None


class LeanQueue:
    """An unbounded ``asyncio.Queue`` that holds no deque while it is empty and nobody waits.

    The calls python-engineio, uvicorn and the fan-out make: ``put``/``put_nowait``, ``get``/
    ``get_nowait``, ``task_done``/``join``, ``qsize``/``empty``. ``on_put``, when set, is called
    after each put (a socket starts its writer from it).
    """

    __slots__ = ("_finished", "_getters", "_items", "_unfinished", "on_put")

    def __init__(self) -> None:
        self._items: collections.deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._finished: LeanEvent | None = None
        self.on_put: Any = None

    def qsize(self) -> int:
        """Items waiting."""
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        """True when no item waits."""
        return not self._items

    def put_nowait(self, item: Any) -> None:
        """Append ``item`` and wake the first waiting getter."""
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._unfinished += 1
        if self._finished is not None:
            self._finished.clear()
        self._wake_one()
        if self.on_put is not None:
            self.on_put()

    async def put(self, item: Any) -> None:
        """Append ``item`` (never blocks: the queue is unbounded)."""
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        """The first item; ``asyncio.QueueEmpty`` when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    async def get(self) -> Any:
        """The first item, waiting for one."""
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                if self._getters and getter in self._getters:
                    self._getters.remove(getter)
                    if not self._getters:
                        self._getters = None
                if self._items:
                    # It may have been woken and cancelled at once: the next getter takes it.
                    self._wake_one()
                raise
        return self.get_nowait()

    def _wake_one(self) -> None:
        """Wake the first getter still waiting, and take it off the list."""
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not self._getters:
            self._getters = None

    def task_done(self) -> None:
        """One item taken out has been dealt with."""
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._finished is not None:
            self._finished.set()

    async def join(self) -> None:
        """Wait until every item put has been dealt with."""
        if self._unfinished == 0:
            return
        if self._finished is None:
            self._finished = LeanEvent()
        await self._finished.wait()


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with lean queue and event, and no handshake kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = LeanQueue()  # type: ignore[assignment]
        writable = LeanEvent()
        writable.set()
        self.writable = writable  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        """As uvicorn's; once the handshake is answered, its request and response are dropped."""
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            self.request = self.response = None  # type: ignore[assignment]
            self._restart_parser()

    def _restart_parser(self) -> None:
        """Hand frame parsing to a parser that does not hold the upgrade request.

        websockets' server parser reads the request, then delegates to the frame parser for the
        rest of the connection, its frame keeping the parsed request (1.9 KB of headers) alive.
        Right after the handshake, before the client may send a frame, nothing is buffered or
        half-parsed: a fresh frame parser takes over from exactly the same state.
        """
        conn = self.conn
        if conn.state is not State.OPEN or conn.reader.buffer or conn.reader.eof:
            return
        conn.parser = Protocol.parse(conn)
        next(conn.parser)


class LeanSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    """python-engineio's socket; over WebSocket, no task while idle (see the module docstring)."""

    def __init__(self, server: Any, sid: str) -> None:
        super().__init__(server, sid)
        self._ws: Any = None
        self._writer: asyncio.Task[None] | None = None
        # The task reading the WebSocket while it waits for a packet; when the last one came.
        self._reader: asyncio.Task[Any] | None = None
        self._read_at = 0.0
        self._read_expired = False

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> Any:
        """Keep only ``_ENVIRON_KEPT`` of the request's environ, then serve the WebSocket.

        The environ lives as long as the socket (python-socketio keeps it, so do the request's
        frames); its copies of every header were 4 KB of an idle socket. The headers stay in
        ``environ["asgi.scope"]["headers"]``.
        """
        kept = {key: environ[key] for key in _ENVIRON_KEPT if key in environ}
        environ.clear()
        environ.update(kept)
        del kept  # this frame lives as long as the socket
        return await super()._upgrade_websocket(environ)

    def schedule_ping(self) -> None:
        """The next ping in ``ping_interval``, from a timer (stock: a task that sleeps)."""
        if self.last_ping:  # type: ignore[has-type]
            self.last_ping = None
            when = asyncio.get_running_loop().time() + self.server.ping_interval
            self.server.wheel.at(when, self._ping_due, early=True)

    def _ping_due(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()  # type: ignore[assignment]
            self.queue.put_nowait(eio_packet.Packet(eio_packet.PING))

    def _read_timeout(self) -> float:
        return float(self.server.ping_interval + self.server.ping_timeout)

    def _check_read(self) -> None:
        if self._read_expired:
            return
        now = asyncio.get_running_loop().time()
        due = self._read_at + self._read_timeout()
        if self._reader is not None and now >= due:
            self._read_expired = True
            self._reader.cancel()
            return
        # It read since, or is busy with what it read: check again at the new deadline.
        wheel = self.server.wheel
        wheel.at(max(due, now + wheel.resolution), self._check_read, early=False)

    def _start_writer(self) -> None:
        if self._ws is not None and self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        """Send what the queue holds, in order; end when it is empty (or closed: the sentinel)."""
        ws, queue = self._ws, self.queue
        try:
            while True:
                try:
                    pkt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                queue.task_done()
                if pkt is None:
                    self._ws = None  # no writer starts again
                    break
                try:
                    await ws.send(pkt.encode())
                except Exception:
                    self._ws = None
                    break
        finally:
            self._writer = None
        await ws.close()

    async def _websocket_handler(self, ws: Any) -> None:
        """Engine.IO over WebSocket, as python-engineio's, without a task per read or per wait."""
        max_size = self.server.max_http_buffer_size

        async def websocket_wait() -> Any:
            data = await ws.wait()
            if data and len(data) > max_size:
                raise ValueError("packet is too large")
            return data

        if self.connected:  # type: ignore[has-type]
            # An upgrade from long-polling: the stock sequence, probe and all.
            self.upgrading = True
            try:
                pkt = await websocket_wait()
            except OSError:
                return
            decoded = eio_packet.Packet(encoded_packet=pkt)
            if decoded.packet_type != eio_packet.PING or decoded.data != "probe":
                self.upgrading = False
                return
            await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            await self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
            try:
                pkt = await websocket_wait()
            except OSError:
                self.upgrading = False
                return
            if eio_packet.Packet(encoded_packet=pkt).packet_type != eio_packet.UPGRADE:
                self.upgraded = False
                self.upgrading = False
                return
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True

        # From here on every put starts the writer when it is not running.
        self._ws = ws
        self.queue.on_put = self._start_writer
        self._start_writer()
        # The stock read deadline (no packet in ping_interval + ping_timeout: the socket is
        # closed), checked from the wheel instead of a loop timer and a task per read.
        loop = asyncio.get_running_loop()
        self._read_at = loop.time()
        self.server.wheel.at(self._read_at + self._read_timeout(), self._check_read, early=False)
        while True:
            self._reader = asyncio.current_task()
            try:
                p = await websocket_wait()
            except asyncio.CancelledError:
                if self._read_expired and self._reader is not None:
                    self._reader.uncancel()  # the deadline's own cancel, as asyncio.timeout does
                break
            except Exception:
                break
            finally:
                self._reader = None
            self._read_at = loop.time()
            if p is None:
                break  # closed by the client
            try:
                await self.receive(eio_packet.Packet(encoded_packet=p))
            except engineio.exceptions.UnknownPacketError:
                pass
            except engineio.exceptions.SocketIsClosedError:
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")

        self._read_expired = True  # no deadline check acts on this socket any more
        await self.queue.put(None)  # the writer sends what is queued, then closes
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)


class LeanEngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server, making ``LeanSocket`` sockets with ``LeanQueue`` queues."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wheel = TimerWheel()

    def create_queue(self, *args: Any, **kwargs: Any) -> LeanQueue:
        """A socket's outgoing queue."""
        return LeanQueue()

    async def _handle_connect(self, environ: Any, transport: str, jsonp_index: Any = None) -> Any:
        """python-engineio's connect, but for the socket's class (it names AsyncSocket inline)."""
        if self.start_service_task:  # type: ignore[has-type]
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)
        sid = self.generate_id()
        s = LeanSocket(self, sid)
        self.sockets[sid] = s
        # Built inline, not kept in a local: this frame lives as long as a WebSocket socket.
        await s.send(
            eio_packet.Packet(
                eio_packet.OPEN,
                {
                    "sid": sid,
                    "upgrades": self._upgrades(sid, transport),
                    "pingTimeout": int(self.ping_timeout * 1000),
                    "pingInterval": int(self.ping_interval + self.ping_interval_grace_period)
                    * 1000,
                    "maxPayload": self.max_http_buffer_size,
                },
            )
        )
        ret = await self._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            del self.sockets[sid]
            self.logger.warning("Application rejected connection")
            return self._unauthorized(ret or None)
        s.schedule_ping()
        if transport == "websocket":
            ret = await s.handle_get_request(environ)
            if s.closed and sid in self.sockets:
                del self.sockets[sid]
            return ret
        s.connected = True
        headers = None
        if self.cookie:
            cookie = (
                self.cookie
                if isinstance(self.cookie, dict)
                else {"name": self.cookie, "path": "/", "SameSite": "Lax"}
            )
            headers = [("Set-Cookie", self._generate_sid_cookie(sid, cookie))]
        try:
            return self._ok(await s.poll(), headers=headers, jsonp_index=jsonp_index)
        except engineio.exceptions.QueueEmpty:
            return self._bad_request()
