"""A recording Socket.IO client and waiting helpers for the realtime gateway's e2e tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest
import socketio

from devstack import Stack

DEADLINE_S = 20.0


def unique_room(prefix: str = "rt") -> str:
    """A room name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


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
        for event in ("message", "presence", "typing"):
            sio.on(event, self._recorder(event))
        sio.on("connect_error", self._refused)
        return sio

    def _recorder(self, event: str) -> Callable[[Any], None]:
        def record(data: Any) -> None:
            self.events[event].append((time.monotonic(), data))

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

    def users(self, room: str) -> list[str] | None:
        """The room's users per the latest presence event, None before any."""
        seen = self.got("presence", room)
        return seen[-1]["users"] if seen else None


async def until(check: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> float:
    """Wait until ``check()`` holds; return the seconds it took; fail after the deadline."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline_s:
            pytest.fail(f"timed out after {deadline_s}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start
