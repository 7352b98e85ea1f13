"""The gateway's Socket.IO handlers: connect, join, leave, send, typing, edit, delete, react,
read; all answer with acks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import socketio

from chat import frames, inbound, names
from chat.auth import Identity, authenticate, authorize_room
from chat.contract import (
    READ,
    ContractError,
    DeleteRequest,
    EditRequest,
    ErrorCode,
    JoinRequest,
    LeaveRequest,
    ReactRequest,
    ReadRequest,
    SendRequest,
    TypingRequest,
    error_ack,
    ok_ack,
    parse,
    utc_now_iso,
)
from chat.ids import message_id, op_id
from chat.ratelimit import RateLimiter, raise_if_limited
from chat.settings import Settings
from chat.shards import RedisClient, Shards
from realtime import metrics, reads
from realtime.coalesce import QuietWindows
from realtime.fanout import RoomFanout
from realtime.intake import SendIntake
from realtime.outcomes import Outcomes
from realtime.presence import Presence, Snapshot, parse_member
from realtime.server import GatewayServer

log = logging.getLogger("realtime.gateway")

Ack = dict[str, Any]

# Rooms per heartbeat pipeline: bounds one round trip's size on a node with many rooms.
_HEARTBEAT_CHUNK = 500
_STOP_TIMEOUT_S = 3.0


@dataclass(slots=True)
class Connection:
    """One socket's user and the chat rooms it has joined."""

    identity: Identity
    rooms: set[str] = field(default_factory=set)
    # The token's exp, read once: the heartbeat checks every socket against it.
    expires_at: float | None = None


class Gateway:
    """Owns the Socket.IO server of this node and the state of its sockets."""

    def __init__(
        self,
        settings: Settings,
        *,
        sio: GatewayServer,
        shards: Shards,
        intake: SendIntake,
        presence: Presence,
        fanout: RoomFanout,
        outcomes: Outcomes,
    ) -> None:
        self.settings = settings
        self.sio = sio
        self.manager = sio.manager
        # One Redis client and one limiter: the intake's and the shards' own.
        self.redis: RedisClient = shards.client
        self.shards = shards
        self.limiter: RateLimiter = intake.limiter
        self.intake = intake
        self.presence = presence
        self.fanout = fanout
        self.outcomes = outcomes
        # Per (room, user): the position (and the socket that moved it) waiting to be announced.
        self._read_windows: QuietWindows[tuple[str, str], tuple[int, str]] = QuietWindows(
            settings.read_coalesce_ms / 1000, self._announce_pending, "read"
        )
        self.conns: dict[str, Connection] = {}
        # user -> this node's sockets of that user
        self.sockets_of: dict[str, int] = {}
        # chat room -> sid -> user, for this node's sockets: presence heartbeats walk it.
        self.rooms: dict[str, dict[str, str]] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Per room: whether a change waits to be announced.
        self._presence_windows: QuietWindows[str, bool] = QuietWindows(
            settings.presence_coalesce_ms / 1000, self._announce_current, "presence"
        )
        self.sio.on("connect", self.connect)
        self.sio.on("disconnect", self.disconnect)
        self.sio.on("join", self._event("join", self.join))
        self.sio.on("leave", self._event("leave", self.leave))
        self.sio.on("send", self._event("send", self.send))
        self.sio.on("typing", self._event("typing", self.typing))
        self.sio.on("edit", self._event("edit", self.edit))
        self.sio.on("delete", self._event("delete", self.delete))
        self.sio.on("react", self._event("react", self.react))
        self.sio.on("read", self._event("read", self.read))
        self.sio.on("*", self.unknown)

    # ----- lifecycle -----

    def start(self) -> None:
        """Start the room subscriptions and the presence heartbeat."""
        self.fanout.start()
        if self._heartbeat_task is None:
            self._heartbeat_task = asyncio.create_task(self._heartbeat_loop())

    async def stop(self) -> None:
        """Stop the heartbeat and withdraw this node's sockets from presence."""
        await self.intake.aclose()
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        members = self._members_by_room()
        self.rooms.clear()
        try:
            if members:
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    for snapshot in await self.presence.remove_all(members):
                        await self._announce(snapshot, "leave", coalesce=False)
        except Exception:
            # Peers drop these members when their TTL passes, as for a crashed node.
            log.warning("could not withdraw presence on stop", exc_info=True)
        finally:
            await self.fanout.stop()

    # ----- event plumbing -----

    def _event(
        self, name: str, handler: Callable[[str, Connection, Any], Awaitable[Ack]]
    ) -> Callable[..., Awaitable[Ack]]:
        """Wrap a handler: any payload shape, every outcome an ack, no exception escapes."""

        # Label lookups cost a lock and a dict probe per call: bind the hot ones once.
        events_in, acks_ok = metrics.EVENTS_IN.labels(name), metrics.ACKS.labels(name, "ok")

        @functools.wraps(handler)
        async def wrapped(sid: str, *args: Any) -> Ack:
            events_in.inc()
            payload = args[0] if len(args) == 1 else (list(args) if args else None)
            conn = self.conns.get(sid)
            try:
                if conn is None:
                    raise ContractError(ErrorCode.UNAUTHORIZED, "not connected")
                if conn.expires_at is not None and time.time() >= conn.expires_at:
                    raise ContractError(
                        ErrorCode.UNAUTHORIZED, "token expired: reconnect with a fresh token"
                    )
                ack = await handler(sid, conn, payload)
            except ContractError as exc:
                ack = exc.ack()
            except Exception:
                log.exception("%s failed", name, extra={"event": name, "sid": sid})
                ack = error_ack(ErrorCode.UNAVAILABLE, "temporarily unavailable; retry")
            if ack.get("ok"):
                acks_ok.inc()
            else:
                code = ack["error"]["code"]
                metrics.ACKS.labels(name, code).inc()
                metrics.ERRORS.labels(code).inc()
            return ack

        return wrapped

    def _spoofed(self, sid: str, event: str) -> Ack | None:
        """An error ack when a connected client sent a reserved event name as a plain event."""
        # Socket.IO routes a client's event named "connect" or "disconnect" to the same handler
        # as the real thing; only a real one sees the socket still connecting or disconnecting.
        if not self.manager.is_connected(sid, "/"):
            return None
        metrics.EVENTS_IN.labels("unknown").inc()
        metrics.ACKS.labels("unknown", str(ErrorCode.INVALID_PAYLOAD)).inc()
        metrics.ERRORS.labels(str(ErrorCode.INVALID_PAYLOAD)).inc()
        return error_ack(ErrorCode.INVALID_PAYLOAD, f"{event!r} is a reserved event name")

    async def connect(self, sid: str, *args: Any) -> Ack | None:
        """Authenticate the socket or refuse it with ``{code, message}``."""
        if (spoofed := self._spoofed(sid, "connect")) is not None:
            return spoofed
        auth = args[1] if len(args) > 1 else None
        try:
            identity = authenticate(auth, self.settings)
            await self._admit(sid, identity.user)
        except ContractError as exc:
            metrics.ACKS.labels("connect", str(exc.code)).inc()
            metrics.ERRORS.labels(str(exc.code)).inc()
            refused = socketio.exceptions.ConnectionRefusedError(exc.message)
            body = {"code": str(exc.code), "message": exc.message, **exc.extra}
            # The JS client exposes `data`; the Python client passes the whole object.
            refused.error_args = {**body, "data": body}
            raise refused from None
        exp = identity.claim("exp")
        expires_at = (
            float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
        )
        self.conns[sid] = Connection(identity=identity, expires_at=expires_at)
        self.sockets_of[identity.user] = self.sockets_of.get(identity.user, 0) + 1
        metrics.CONNECTIONS.inc()
        return None

    async def _admit(self, sid: str, user: str) -> None:
        """Refuse a user's socket past the per-node cap or the connect rate."""
        cap = self.settings.max_sockets_per_user
        if self.sockets_of.get(user, 0) >= cap:
            raise ContractError(
                ErrorCode.TOO_MANY_SOCKETS,
                f"a user may have at most {cap} sockets on a node: close one before opening more",
            )
        try:
            wait = await self.limiter.retry_after_ms("connect", user, sid)
        except Exception:
            # Redis trouble must not lock every user out: connects go unlimited meanwhile.
            log.warning("connect rate limit unavailable", exc_info=True)
            return
        raise_if_limited("connect", wait)

    async def disconnect(self, sid: str, *_: Any) -> Ack | None:
        """Forget the socket and withdraw it from the presence of its rooms."""
        if (spoofed := self._spoofed(sid, "disconnect")) is not None:
            return spoofed
        conn = self.conns.pop(sid, None)
        if conn is None:
            return None
        metrics.CONNECTIONS.dec()
        user = conn.identity.user
        left = self.sockets_of.get(user, 1) - 1
        if left > 0:
            self.sockets_of[user] = left
        else:
            self.sockets_of.pop(user, None)
        for room in list(conn.rooms):
            self._forget(room, sid)
            self.fanout.remove(room, sid)
        for room in conn.rooms:
            try:
                await self._announce(await self.presence.leave(room, sid, user), "leave")
            except Exception:
                # Its entries expire with the TTL, like those of a crashed node.
                log.warning("presence leave failed", exc_info=True, extra={"room": room})
        return None

    async def unknown(self, event: str, sid: str, *_: Any) -> Ack:
        """Any event outside the contract."""
        metrics.EVENTS_IN.labels("unknown").inc()
        metrics.ACKS.labels("unknown", str(ErrorCode.INVALID_PAYLOAD)).inc()
        metrics.ERRORS.labels(str(ErrorCode.INVALID_PAYLOAD)).inc()
        return error_ack(ErrorCode.INVALID_PAYLOAD, f"unknown event {str(event)[:64]!r}")

    # ----- local room index -----

    def _remember(self, room: str, sid: str, user: str) -> None:
        sids = self.rooms.get(room)
        if sids is None:
            sids = self.rooms[room] = {}
            metrics.ROOMS.inc()
        if sid not in sids:
            sids[sid] = user
            metrics.MEMBERSHIPS.inc()

    def _forget(self, room: str, sid: str) -> None:
        sids = self.rooms.get(room)
        if sids is None or sids.pop(sid, None) is None:
            return
        metrics.MEMBERSHIPS.dec()
        if not sids:
            del self.rooms[room]
            metrics.ROOMS.dec()

    # ----- presence -----

    async def _announce(self, snapshot: Snapshot, cause: str, coalesce: bool = True) -> bool:
        """Tell every node's members of a room who is in it, when that changed.

        At most one announcement per room per ``presence_coalesce_ms`` from this node: the
        first change goes out at once, later ones in that interval become one announcement of
        the room's users as Redis holds them at its end. True when this one went out now.
        """
        if not snapshot.changed:
            return False
        metrics.PRESENCE_CHANGES.labels(cause).inc()
        room = snapshot.room
        if coalesce and not self._presence_windows.admit(room, True):
            metrics.PRESENCE_COALESCED.inc()  # announced when the interval ends
            return False
        await self._publish_presence(room, snapshot.users)
        return True

    async def _publish_presence(self, room: str, users: list[str]) -> None:
        await self.fanout.publish(room, "presence", {"room": room, "users": users})

    async def _announce_current(self, room: str, _changed: bool) -> None:
        # Changes came in the interval: announce the room as it is now. Should this fail, the
        # next change or the heartbeat's expiry check announces the room again.
        await self._publish_presence(room, await self.presence.users(room))

    def _members_by_room(self, rooms: Iterable[str] | None = None) -> dict[str, list[str]]:
        chosen = self.rooms if rooms is None else {r: self.rooms[r] for r in rooms}
        return {
            room: [self.presence.member(sid, user) for sid, user in sids.items()]
            for room, sids in chosen.items()
        }

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.presence_heartbeat_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.HEARTBEAT_FAILURES.inc()
                log.warning("presence heartbeat failed", exc_info=True)

    async def heartbeat(self) -> None:
        """Refresh this node's presence entries, announce expiries, drop expired tokens."""
        rooms = list(self.rooms)
        for start in range(0, len(rooms), _HEARTBEAT_CHUNK):
            chunk = self._members_by_room(
                r for r in rooms[start : start + _HEARTBEAT_CHUNK] if r in self.rooms
            )
            for snapshot in await self.presence.heartbeat(chunk):
                await self._announce(snapshot, "expiry")
                await self._restore(snapshot)
        now = time.time()
        expired = [
            sid for sid, c in self.conns.items() if c.expires_at is not None and now >= c.expires_at
        ]
        for sid in expired:
            await self.sio.disconnect(sid)

    async def _restore(self, snapshot: Snapshot) -> None:
        """Re-add sockets whose entries expired while they were still here (a long stall)."""
        for entry in snapshot.missing:
            _node, sid, user = parse_member(entry)
            if sid in self.rooms.get(snapshot.room, {}):
                await self._announce(await self.presence.enter(snapshot.room, sid, user), "join")

    # ----- client events -----

    async def join(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Enter a room; with ``since_seq``, replay what the socket missed before the ack."""
        request = parse(JoinRequest, payload)
        room, sio_room = request.room, names.sio_room(request.room)
        user = conn.identity.user
        authorize_room(conn.identity, room, self.settings)
        if room not in conn.rooms and len(conn.rooms) >= self.settings.max_rooms_per_socket:
            raise ContractError(
                ErrorCode.TOO_MANY_ROOMS,
                f"a socket may join at most {self.settings.max_rooms_per_socket} rooms",
            )
        await self.limiter.check("join", user, sid)
        if request.since_seq is not None:
            # Each replay may emit up to max_replay_messages: rejoin loops are limited apart.
            await self.limiter.check("replay", user, sid)
        was_member = room in conn.rooms
        # The node's subscription to the room comes first: once the socket is in the room,
        # every frame published from then on reaches it.
        await self._subscribe(room, sid)
        try:
            return await self._enter(sid, conn, request)
        except BaseException:
            if not was_member and room not in conn.rooms:
                self.fanout.remove(room, sid)
                await self.sio.leave_room(sid, sio_room)
            raise

    async def _enter(self, sid: str, conn: Connection, request: JoinRequest) -> Ack:
        room, sio_room = request.room, names.sio_room(request.room)
        user = conn.identity.user
        if request.since_seq is None:
            await self.sio.enter_room(sid, sio_room)
            self._joined(conn, room, sid)
            state = await self._join_state(sid, room, user)
            self.fanout.set_floor(room, state.last_seq)
            await self._present(room, sid, user)
            return ok_ack(
                room=room,
                last_seq=state.last_seq,
                last_read_seq=state.last_read_seq,
                unread=state.unread,
            )

        self.fanout.hold(room, sid)
        try:
            await self.sio.enter_room(sid, sio_room)
            self._joined(conn, room, sid)
            last_seq, gap, replayed = await self._replay(sid, room, request.since_seq)
            self.fanout.set_floor(room, last_seq)
        finally:
            held = self.fanout.release(room, sid)
        for frame in held:
            if frame.seq is not None and frame.seq > replayed:
                self.fanout.send_packet(sid, frame.event, frame.packet)
                replayed = frame.seq
        await self._present(room, sid, user)
        state = await self._join_state(sid, room, user)
        ack = ok_ack(
            room=room,
            last_seq=max(last_seq, replayed),
            last_read_seq=state.last_read_seq,
            unread=state.unread,
        )
        if gap:
            ack["gap"] = True
        return ack

    async def _join_state(self, sid: str, room: str, user: str) -> reads.JoinState:
        state = await reads.join_state(self.shards, room, user)
        if state.first:
            # The user's first join of the room: PostgreSQL learns of the membership
            # (GET /me/rooms lists it) through the same path as read positions.
            try:
                await self.intake.accept(user, sid, inbound.read_entry(room, user, 0), event=None)
            except Exception:
                log.warning("could not record a membership", exc_info=True, extra={"room": room})
        return state

    async def _subscribe(self, room: str, sid: str) -> None:
        try:
            await self.fanout.add(room, sid)
        except TimeoutError:
            raise ContractError(
                ErrorCode.UNAVAILABLE, "could not subscribe to the room in time; retry"
            ) from None

    def _joined(self, conn: Connection, room: str, sid: str) -> None:
        if self.conns.get(sid) is not conn:
            # It disconnected while this join awaited: indexing it now would keep a ghost.
            raise ContractError(ErrorCode.UNAUTHORIZED, "not connected")
        conn.rooms.add(room)
        self._remember(room, sid, conn.identity.user)

    async def _present(self, room: str, sid: str, user: str) -> None:
        """Add the socket to the room's presence; the joiner always learns who is there."""
        snapshot = await self.presence.enter(room, sid, user)
        if sid not in self.conns:
            # Its disconnect's removal may have reached Redis first: remove it again.
            await self.presence.leave(room, sid, user)
            return
        if not await self._announce(snapshot, "join"):
            self.fanout.emit_to(sid, "presence", {"room": room, "users": snapshot.users})

    async def _replay(self, sid: str, room: str, since: int) -> tuple[int, bool, int]:
        """Emit the recent log after ``since``; return (last_seq, gap, last seq sent).

        At most ``max_replay_messages``, the newest: anything older is a gap the client pages
        from history, as when the capped log no longer holds it.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(names.seq_key(room))
            pipe.xrevrange(
                names.recent_log_key(room),
                "+",
                frames.log_excluding(since),
                count=self.settings.max_replay_messages,
            )
            raw_last, newest_first = await pipe.execute()
        entries = reversed(newest_first)
        last_seq = int(raw_last or 0)
        sent = since
        gap = False
        for entry_id, fields in entries:
            frame = frames.log_entry_frame(entry_id, fields)
            assert frame.seq is not None
            if frame.seq != sent + 1:
                gap = True  # older entries were trimmed from the capped log
            self.fanout.send_packet(sid, frame.event, frame.packet)
            sent = frame.seq
        if sent < last_seq:
            gap = True
        return last_seq, gap, sent

    async def leave(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Leave a room (a no-op when not in it)."""
        request = parse(LeaveRequest, payload)
        room = request.room
        await self.limiter.check("leave", conn.identity.user, sid)
        await self.sio.leave_room(sid, names.sio_room(room))
        if room in conn.rooms:
            conn.rooms.discard(room)
            self._forget(room, sid)
            self.fanout.remove(room, sid)
            await self._announce(await self.presence.leave(room, sid, conn.identity.user), "leave")
        return ok_ack()

    async def send(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Accept a message durably onto the inbound stream; ack with its final id.

        A reply is acked once sequenced: only then is it known that ``reply_to`` names a
        message of the room that is not deleted (else ``not_found``).
        """
        request = parse(SendRequest, payload)
        if request.room not in conn.rooms:
            raise ContractError(ErrorCode.NOT_MEMBER, f"join {request.room!r} before sending")
        sender = conn.identity.user
        fields = inbound.send_entry(request, sender=sender, ts=utc_now_iso())
        msg_id = message_id(sender, request.room, request.client_msg_id)
        if request.reply_to is None:
            raise_if_limited("send", await self.intake.accept(sender, sid, fields))
        else:
            outcome = await self._sequenced(sid, conn, fields, msg_id, "client_msg_id")
            if outcome.code != "ok":
                raise ContractError(
                    ErrorCode.NOT_FOUND,
                    "reply_to names no message of this room (or a deleted one)",
                )
        return ok_ack(id=msg_id)

    # ----- edits, deletes, reactions -----

    async def _sequenced(
        self, sid: str, conn: Connection, fields: dict[str, str], op: str, retry_with: str
    ) -> frames.OpOutcome:
        """Append an op and wait (bounded) for the outcome the message function publishes."""
        with self.outcomes.expect(op) as outcome:
            try:
                raise_if_limited("send", await self.intake.accept(conn.identity.user, sid, fields))
                async with asyncio.timeout(self.settings.op_ack_timeout_s):
                    return await outcome
            except TimeoutError:
                raise ContractError(
                    ErrorCode.UNAVAILABLE,
                    f"no outcome within {self.settings.op_ack_timeout_s} s: retry with the same "
                    f"{retry_with} (it is applied once)",
                ) from None

    async def _apply(
        self, sid: str, conn: Connection, request: EditRequest | DeleteRequest | ReactRequest
    ) -> frames.OpOutcome:
        if request.room not in conn.rooms:
            raise ContractError(ErrorCode.NOT_MEMBER, f"join {request.room!r} first")
        user = conn.identity.user
        fields = inbound.op_entry(request, sender=user, ts=utc_now_iso())
        op = op_id(user, request.room, request.client_op_id)
        outcome = await self._sequenced(sid, conn, fields, op, "client_op_id")
        match outcome.code:
            case "ok":
                return outcome
            case "not_found":
                raise ContractError(
                    ErrorCode.NOT_FOUND,
                    f"no message {request.id!r} in {request.room!r} (or it is deleted)",
                )
            case "forbidden":
                raise ContractError(
                    ErrorCode.FORBIDDEN, "only a message's sender may edit or delete it"
                )
            case "too_many_emojis":
                raise ContractError(
                    ErrorCode.TOO_MANY_EMOJIS,
                    f"a message carries at most {self.settings.max_emojis_per_message} "
                    "distinct emojis: react with one it already has",
                )
            case code:
                raise ContractError(ErrorCode.INTERNAL, f"unexpected outcome {code[:40]!r}")

    async def edit(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Replace the text of one's own message; ack with its new version."""
        request = parse(EditRequest, payload)
        outcome = await self._apply(sid, conn, request)
        return ok_ack(id=request.id, version=outcome.version)

    async def delete(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Delete one's own message: it stays as a tombstone at its seq."""
        request = parse(DeleteRequest, payload)
        await self._apply(sid, conn, request)
        return ok_ack(id=request.id)

    async def react(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Put (``on``) or take back an emoji on a message."""
        request = parse(ReactRequest, payload)
        await self._apply(sid, conn, request)
        return ok_ack()

    # ----- read positions -----

    async def read(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Move the user's read position forward; tell the room (coalesced); persist it."""
        request = parse(ReadRequest, payload)
        room, user = request.room, conn.identity.user
        if room not in conn.rooms:
            raise ContractError(ErrorCode.NOT_MEMBER, f"join {room!r} first")
        await self.limiter.check("read", user, sid)
        before = self._read_windows.waiting((room, user))
        position, asked = await reads.move(self.shards, room, user, request.seq)
        if asked and position > 0:
            # Also when a retry finds it moved already: the first append may have failed.
            entry = inbound.read_entry(room, user, position)
            await self.intake.accept(user, sid, entry, event=None)
            if before is None or before[0] < position:
                await self._announce_read(room, user, position, sid)
        return ok_ack(last_read_seq=position)

    async def _announce_read(self, room: str, user: str, position: int, sid: str) -> None:
        """At most one ``read`` per user per room per ``read_coalesce_ms`` from this node."""
        if self._read_windows.admit((room, user), (position, sid)):
            await self._publish_read(room, user, position, sid)

    async def _publish_read(self, room: str, user: str, position: int, sid: str) -> None:
        payload = {"room": room, "user": user, "last_read_seq": position}
        await self.fanout.publish(room, READ, payload, skip=sid)

    async def _announce_pending(self, key: tuple[str, str], moved: tuple[int, str]) -> None:
        # Should this fail, the user's next read announces the position again.
        await self._publish_read(*key, *moved)

    async def typing(self, sid: str, conn: Connection, payload: Any) -> Ack:
        """Tell the room's other members that this user is (or stopped) typing."""
        request = parse(TypingRequest, payload)
        if request.room not in conn.rooms:
            raise ContractError(ErrorCode.NOT_MEMBER, f"join {request.room!r} first")
        await self.limiter.check("typing", conn.identity.user, sid)
        await self.fanout.publish(
            request.room,
            "typing",
            {"room": request.room, "user": conn.identity.user, "typing": request.typing},
            skip=sid,
        )
        return ok_ack()
