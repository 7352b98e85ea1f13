"""The lean per-socket classes: queue and event semantics, timers, and an idle socket's state."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from engineio import packet as eio_packet

from chat.settings import Settings
from realtime.__main__ import gateway_server_options
from realtime.app import build_gateway
from realtime.lean import (
    LeanEngineIOServer,
    LeanEvent,
    LeanQueue,
    LeanSocket,
    LeanWebSocketProtocol,
    TimerWheel,
)


async def test_queue_is_fifo_and_holds_no_deque_while_empty() -> None:
    queue = LeanQueue()
    assert queue.empty() and queue.qsize() == 0 and queue._items is None
    for item in range(3):
        await queue.put(item)
    assert queue.qsize() == 3
    assert [await queue.get(), queue.get_nowait(), await queue.get()] == [0, 1, 2]
    assert queue._items is None
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_queue_get_waits_for_a_put_and_a_cancelled_getter_loses_nothing() -> None:
    queue = LeanQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("a")
    first.cancel()  # woken and cancelled before it ran: the item goes to the next getter
    assert await second == "a"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue._getters is None


async def test_queue_join_waits_for_every_task_done() -> None:
    queue = LeanQueue()
    await queue.join()  # nothing put: returns at once
    queue.put_nowait(1)
    queue.put_nowait(2)
    joined = asyncio.create_task(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError, match="too many"):
        queue.task_done()


async def test_queue_calls_on_put_after_each_put() -> None:
    queue = LeanQueue()
    seen: list[int] = []
    queue.on_put = lambda: seen.append(queue.qsize())
    queue.put_nowait("x")
    await queue.put("y")
    assert seen == [1, 2]


def _waiting(event: LeanEvent) -> int:
    return len(event._waiters) if event._waiters is not None else 0


async def test_event_wakes_its_waiters_and_forgets_cancelled_ones() -> None:
    event = LeanEvent()
    assert not event.is_set()
    waiters = [asyncio.create_task(event.wait()) for _ in range(2)]
    gone = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert _waiting(event) == 2
    event.set()
    assert await asyncio.gather(*waiters) == [True, True]
    assert _waiting(event) == 0 and await event.wait()
    event.clear()
    assert not event.is_set()


async def test_wheel_runs_callbacks_in_their_tick_with_one_timer_per_tick() -> None:
    wheel = TimerWheel(resolution=0.05)
    loop = asyncio.get_running_loop()
    ran: list[tuple[str, float]] = []
    start = loop.time()

    def record(name: str) -> Callable[[], None]:
        return lambda: ran.append((name, loop.time()))

    wheel.at(start + 0.1, record("a"), early=False)
    wheel.at(start + 0.1, record("b"), early=False)
    assert len(wheel._ticks) == 1
    wheel.at(start + 0.1, record("early"), early=True)
    await asyncio.sleep(0.3)
    assert [n for n, _ in ran] == ["early", "a", "b"]
    assert all(at >= start + 0.1 for n, at in ran if n != "early")
    assert wheel._ticks == {}


class _Connection:
    """The Engine.IO side of a WebSocket: what the client sent, what the server wrote."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[str] = []
        self.closed = asyncio.Event()

    async def wait(self) -> str:
        item = await self.inbox.get()
        if item is None:
            raise OSError("disconnected")
        return item

    async def send(self, data: str) -> None:
        self.sent.append(data)

    async def close(self) -> None:
        self.closed.set()


def _server(ping_interval: float, ping_timeout: float) -> tuple[LeanEngineIOServer, list[str]]:
    server = LeanEngineIOServer(
        async_mode="asgi", ping_interval=ping_interval, ping_timeout=ping_timeout
    )
    server.wheel = TimerWheel(resolution=0.05)
    disconnects: list[str] = []

    async def disconnect(sid: str, reason: Any) -> None:
        disconnects.append(sid)

    server.on("disconnect", disconnect)
    return server, disconnects


def _serve(server: LeanEngineIOServer, sid: str) -> tuple[LeanSocket, _Connection, Any]:
    """A socket of ``server`` over a connection, its Engine.IO WebSocket handler running."""
    socket = LeanSocket(server, sid)
    server.sockets[sid] = socket
    ws = _Connection()
    return socket, ws, asyncio.create_task(socket._websocket_handler(ws))


def _writing(socket: LeanSocket) -> bool:
    return socket._writer is not None


async def test_an_idle_socket_runs_no_writer_and_a_packet_starts_one() -> None:
    server, disconnects = _server(ping_interval=30, ping_timeout=30)
    socket, ws, handler = _serve(server, "s1")
    await asyncio.sleep(0.01)
    assert _writing(socket) is False and socket.queue.empty()
    socket.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, data="hello"))
    assert _writing(socket) is True
    await asyncio.sleep(0.01)
    assert ws.sent == ["4hello"] and _writing(socket) is False
    await ws.inbox.put(None)  # the client goes away
    await asyncio.wait_for(handler, 2)
    assert ws.closed.is_set() and socket.closed and disconnects == ["s1"]


async def test_a_silent_socket_is_pinged_then_closed_at_its_read_deadline() -> None:
    server, disconnects = _server(ping_interval=0.1, ping_timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    socket, ws, handler = _serve(server, "s2")
    socket.schedule_ping()
    await asyncio.wait_for(ws.closed.wait(), 3)
    took = loop.time() - started
    await asyncio.wait_for(handler, 2)
    assert "2" in ws.sent  # it was pinged
    assert took >= 0.3  # never before ping_interval + ping_timeout without a packet
    assert socket.closed and disconnects == ["s2"]


async def test_a_socket_that_keeps_reading_outlives_its_first_deadline() -> None:
    server, disconnects = _server(ping_interval=0.1, ping_timeout=0.1)
    _socket, ws, handler = _serve(server, "s3")
    for _ in range(6):
        await asyncio.sleep(0.1)
        await ws.inbox.put("3")  # a pong every 0.1 s, under the 0.2 s deadline
    assert not handler.done() and not disconnects
    await ws.inbox.put(None)
    await asyncio.wait_for(handler, 2)


def test_the_gateway_serves_websockets_with_the_lean_protocol() -> None:
    options = gateway_server_options(Settings())
    assert options["ws"] is LeanWebSocketProtocol
    assert options["ws_per_message_deflate"] is False
    assert options["ws_max_size"] > Settings().max_payload_bytes


async def test_the_gateway_makes_lean_engineio_sockets() -> None:
    redis = aioredis.Redis()
    try:
        gateway = build_gateway(Settings(), redis)
        assert isinstance(gateway.sio.eio, LeanEngineIOServer)
        assert isinstance(gateway.sio.eio.create_queue(), LeanQueue)
    finally:
        await redis.aclose()


# What realtime/lean.py copies or reaches into, as the locked versions ship it. A new version
# that changes one fails here: re-read it against lean.py's copy, then update its hash.
UPSTREAM = {
    "engineio.async_server.AsyncServer._handle_connect": "5bd7edc1d1ae115a",
    "engineio.async_socket.AsyncSocket._websocket_handler": "27f120df4d717a24",
    "engineio.async_socket.AsyncSocket._upgrade_websocket": "820b83efe96adb98",
    "engineio.async_socket.AsyncSocket.schedule_ping": "fe316639159cd70d",
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.send": (
        "d4919ed760ce9f7b"
    ),
    "websockets.protocol.Protocol.parse": "45aaf900644b63c4",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_the_library_code_lean_copies_is_the_code_it_was_copied_from(name: str) -> None:
    module_name, _, rest = name.rpartition(".")
    module_name, _, owner = module_name.rpartition(".")
    method = getattr(getattr(importlib.import_module(module_name), owner), rest)
    digest = hashlib.sha256(inspect.getsource(method).encode()).hexdigest()[:16]
    assert digest == UPSTREAM[name], (
        f"{name} changed upstream: compare it with realtime/lean.py, then set its hash"
    )
