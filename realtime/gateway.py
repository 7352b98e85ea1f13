"""The gateway's Socket.IO handlers: connect, join, leave, send, typing; all answer with acks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
import socketio

from chat import names
from chat.auth import Identity, authenticate
from chat.contract import (
    ContractError,
    ErrorCode,
    JoinRequest,
    LeaveRequest,
    SendRequest,
    TypingRequest,
    error_ack,
    inbound_fields,
    ok_ack,
    parse,
    utc_now_iso,
)
from chat.ids import message_id
from chat.settings import Settings
from realtime import metrics
from realtime.fanout import FanoutManager

log = logging.getLogger("realtime.gateway")

R = TypeVar("R")
Ack = dict[str, Any]

_decode_message = msgspec.json.Decoder().decode


@dataclass(slots=True)
class Connection:
    """One socket's user and the chat rooms it has joined."""

    identity: Identity
    rooms: set[str] = field(default_factory=set)


class Gateway:
    """Owns the Socket.IO server of this node and the state of its sockets."""

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.manager = FanoutManager(settings.redis_url, channel=settings.fanout_channel)
        origins: str | list[str] = (
            "*" if settings.cors_origins.strip() == "*" else settings.cors_origins.split(",")
        )
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=self.manager,
            cors_allowed_origins=origins,
            max_http_buffer_size=settings.max_payload_bytes,
            ping_interval=20,
            ping_timeout=20,
            logger=False,
            engineio_logger=False,
        )
        self.conns: dict[str, Connection] = {}
        self.sio.on("connect", self.connect)
        self.sio.on("disconnect", self.disconnect)
        self.sio.on("join", self._event("join", self.join))
        self.sio.on("leave", self._event("leave", self.leave))
        self.sio.on("send", self._event("send", self.send))
        self.sio.on("typing", self._event("typing", self.typing))
        self.sio.on("*", self.unknown)

    def _event(
        self, name: str, handler: Callable[[str, Connection, Any], Awaitable[Ack]]
    ) -> Callable[..., Awaitable[Ack]]:
        """Wrap a handler: any payload shape, every outcome an ack, no exception escapes."""

        @functools.wraps(handler)
        async def wrapped(sid: str, *args: Any) -> Ack:
            metrics.EVENTS_IN.labels(name).inc()
            payload = args[0] if len(args) == 1 else (list(args) if args else None)
            conn = self.conns.get(sid)
            try:
                if conn is None:
                    raise ContractError(ErrorCode.UNAUTHORIZED, "not connected")
                ack = await handler(sid, conn, payload)
            except ContractError as exc:
                ack = exc.ack()
            except Exception:
                log.exception("%s failed", name, extra={"event": name, "sid": sid})
                ack = error_ack(ErrorCode.UNAVAILABLE, "temporarily unavailable; retry")
            outcome = "ok" if ack.get("ok") else ack["error"]["code"]
            metrics.ACKS.labels(name, outcome).inc()
            return ack

        return wrapped

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Authenticate the socket or refuse it with ``{code, message}``."""
        try:
            identity = authenticate(auth, self.settings)
        except ContractError as exc:
            metrics.ACKS.labels("connect", str(exc.code)).inc()
            refused = socketio.exceptions.ConnectionRefusedError(exc.message)
            body = {"code": str(exc.code), "message": exc.message}
            # The JS client exposes `data`; the Python client passes the whole object.
            refused.error_args = {**body, "data": body}
            raise refused from None
        self.conns[sid] = Connection(identity=identity)
        metrics.CONNECTIONS.inc()

    async def disconnect(self, sid: str, *_: Any) -> None:
        """Forget the socket."""
        if self.conns.pop(sid, None) is not None:
            metrics.CONNECTIONS.dec()

    async def unknown(self, event: str, sid: str, *_: Any) -> Ack:
        """Any event outside the contract."""
        metrics.EVENTS_IN.labels("unknown").inc()
        return error_ack(ErrorCode.INVALID_PAYLOAD, f"unknown event {event[:64]!r}")

    async def join(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Enter a room; with ``since_seq``, replay what the socket missed before the ack."""
        request = parse(JoinRequest, payload)
        room, sio_room = request.room, names.sio_room(request.room)
        if room not in conn.rooms and len(conn.rooms) >= self.settings.max_rooms_per_socket:
            raise ContractError(
                ErrorCode.TOO_MANY_ROOMS,
                f"a socket may join at most {self.settings.max_rooms_per_socket} rooms",
            )
        if request.since_seq is None:
            await self.sio.enter_room(sid, sio_room)
            conn.rooms.add(room)
            last_seq = int(await self.redis.get(names.seq_key(room)) or 0)
            return ok_ack(room=room, last_seq=last_seq)

        self.manager.hold(sid, sio_room)
        try:
            await self.sio.enter_room(sid, sio_room)
            conn.rooms.add(room)
            last_seq, gap, replayed = await self._replay(sid, room, request.since_seq)
        finally:
            held = self.manager.release(sid, sio_room)
        for message in held:
            if int(message.get("seq", 0)) > replayed:
                await self.sio.emit("message", message, to=sid)
                replayed = int(message["seq"])
        ack = ok_ack(room=room, last_seq=max(last_seq, replayed))
        if gap:
            ack["gap"] = True
        return ack

    async def _replay(self, sid: str, room: str, since: int) -> tuple[int, bool, int]:
        """Emit the recent log after ``since``; return (last_seq, gap, last seq sent)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(names.seq_key(room))
            pipe.xrange(names.recent_log_key(room), f"({since}-0", "+")
            raw_last, entries = await pipe.execute()
        last_seq = int(raw_last or 0)
        sent = since
        gap = False
        for _entry_id, fields in entries:
            message = _decode_message(fields["m"])
            seq = int(message["seq"])
            if seq != sent + 1:
                gap = True  # older entries were trimmed from the capped log
            await self.sio.emit("message", message, to=sid)
            sent = seq
        if sent < last_seq:
            gap = True
        return last_seq, gap, sent

    async def leave(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Leave a room (a no-op when not in it)."""
        request = parse(LeaveRequest, payload)
        await self.sio.leave_room(sid, names.sio_room(request.room))
        conn.rooms.discard(request.room)
        return ok_ack()

    async def send(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Accept a message durably onto the inbound stream; ack with its final id."""
        request = parse(SendRequest, payload)
        if request.room not in conn.rooms:
            raise ContractError(ErrorCode.NOT_MEMBER, f"join {request.room!r} before sending")
        sender = conn.identity.user
        fields = inbound_fields(request, sender=sender, ts=utc_now_iso())
        await self.redis.xadd(names.INBOUND_STREAM, fields)  # type: ignore[arg-type]
        return ok_ack(id=message_id(sender, request.room, request.client_msg_id))

    async def typing(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Tell the room's other members that this user is (or stopped) typing."""
        request = parse(TypingRequest, payload)
        if request.room not in conn.rooms:
            raise ContractError(ErrorCode.NOT_MEMBER, f"join {request.room!r} first")
        await self.sio.emit(
            "typing",
            {"room": request.room, "user": conn.identity.user, "typing": request.typing},
            room=names.sio_room(request.room),
            skip_sid=sid,
        )
        return ok_ack()
