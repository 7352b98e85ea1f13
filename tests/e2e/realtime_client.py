"""Socket.IO clients for the realtime gateway's e2e tests: a recording one and a raw one."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
import socketio
from websockets.asyncio.client import ClientConnection, connect

from devstack import Stack

# The events that take a room seq.
ROOM_EVENTS = ("message", "message_updated", "message_deleted", "reaction")


def token(stack: Stack, user: str, secret: str | None = None, **claims: Any) -> str:
    """A JWT for ``user`` signed with the stack's secret (or ``secret``)."""
    body = {"sub": user, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, secret or stack.jwt_secret, algorithm="HS256")


class Client:
    """One user's socket; records every server event it receives, with its arrival time."""

    def __init__(self, user: str, *, cookies: bool = False) -> None:
        self.user = user
        self._cookies = cookies
        self.session: aiohttp.ClientSession | None = None
        self.sio = self._new_sio()
        self.events: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        # Every event received, in arrival order.
        self.arrivals: list[tuple[str, Any]] = []
        self.refusal: Any = None
        self._used = False

    def _new_sio(self) -> socketio.AsyncClient:
        kwargs: dict[str, Any] = {}
        if self._cookies:
            # aiohttp drops cookies of IP-address hosts unless told otherwise; the load balancer's
            # sticky cookie for long-polling comes from 127.0.0.1.
            self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            kwargs["http_session"] = self.session
        sio = socketio.AsyncClient(reconnection=False, **kwargs)
        for event in (*ROOM_EVENTS, "presence", "typing", "read"):
            sio.on(event, self._recorder(event))
        sio.on("connect_error", self._refused)
        return sio

    def _recorder(self, event: str) -> Callable[[Any], None]:
        def record(data: Any) -> None:
            self.events[event].append((time.monotonic(), data))
            self.arrivals.append((event, data))

        return record

    def _refused(self, data: Any) -> None:
        self.refusal = data

    async def connect(
        self, url: str, auth: Any = None, transports: list[str] | None = None
    ) -> None:
        """Connect (dev auth by default); each connect after the first opens a new socket."""
        if self._used:
            if self.session is not None:
                await self.session.close()
            self.sio = self._new_sio()
        self._used = True
        auth = {"user": self.user} if auth is None else auth
        await self.sio.connect(
            url, auth=auth, transports=transports or ["websocket"], wait_timeout=10
        )

    async def call(self, event: str, payload: Any = None, timeout: float = 10) -> Any:
        """Emit with an ack and return it."""
        return await self.sio.call(event, payload, timeout=timeout)

    async def close(self) -> None:
        """Disconnect and release the HTTP session."""
        if self.sio.connected:
            await self.sio.disconnect()
        if self.session is not None:
            await self.session.close()

    def got(self, event: str, room: str | None = None) -> list[Any]:
        """Payloads of ``event`` received so far (for one room when given)."""
        return [d for _, d in self.events[event] if room is None or d.get("room") == room]

    def seqs(self, room: str) -> list[int]:
        """Seqs of the room's messages, in arrival order."""
        return [m["seq"] for m in self.got("message", room)]

    def room_events(self, room: str) -> list[tuple[str, Any]]:
        """(event, payload) of every seq-numbered event of the room, in arrival order."""
        return [
            (event, data)
            for event, data in self.arrivals
            if event in ROOM_EVENTS and data.get("room") == room
        ]

    def users(self, room: str) -> list[str] | None:
        """The room's users per the latest presence event, None before any."""
        seen = self.got("presence", room)
        return seen[-1]["users"] if seen else None


class RawSocket:
    """A bare Engine.IO/Socket.IO client over one WebSocket, reading only when told to.

    Its receive buffer is made small, so a socket that stops reading backs up into the server
    within a few hundred kilobytes, as a stalled phone or a hostile client does.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count()

    @classmethod
    async def open(cls, url: str, user: str, recv_buffer: int = 4096) -> RawSocket:
        """Handshake and connect the default namespace with dev auth."""
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        ws = await connect(
            f"ws://{parts.netloc}/socket.io/?EIO=4&transport=websocket",
            sock=sock,
            compression=None,
            ping_interval=None,
            max_queue=1,
            max_size=1 << 20,
            open_timeout=10,
        )
        opened = str(await ws.recv())
        assert opened.startswith("0"), opened
        await ws.send("40" + json.dumps({"user": user}))
        reply = str(await ws.recv())
        assert reply.startswith("40"), reply
        return cls(ws)

    async def send_raw(self, frame: str | bytes) -> None:
        """Send one WebSocket message as it is."""
        await self.ws.send(frame)

    async def emit(self, event: str, payload: Any) -> int:
        """Emit an event asking for an ack; return the ack id (read it with ``ack``)."""
        ack_id = next(self._ids)
        await self.ws.send(f"42{ack_id}" + json.dumps([event, payload]))
        return ack_id

    async def ack(self, ack_id: int, timeout: float = 10) -> Any:
        """Read until the ack ``ack_id`` arrives (answering pings, dropping events)."""
        async with asyncio.timeout(timeout):
            while True:
                text = str(await self.ws.recv())
                if text == "2":
                    await self.ws.send("3")
                elif text.startswith(f"43{ack_id}["):
                    return json.loads(text[len(f"43{ack_id}") :])[0]

    async def call(self, event: str, payload: Any, timeout: float = 10) -> Any:
        """Emit and wait for the ack."""
        return await self.ack(await self.emit(event, payload), timeout)

    async def close(self) -> None:
        """Close without waiting for the server (it may be the one cut off)."""
        self.ws.transport.abort()
