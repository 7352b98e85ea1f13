"""Cross-node fan-out through Redis pub/sub, holding live messages for sockets that replay."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import socketio

from realtime import metrics


def _accepted_at(payload: dict[str, Any]) -> float | None:
    """The epoch time a message was accepted (its ``ts``), None when unreadable."""
    ts = payload.get("ts")
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None


class FanoutManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """The Socket.IO Redis manager, plus per-socket holds during ``since_seq`` replay.

    While a socket replays a room's recent log, live ``message`` events for that room are
    kept aside for it instead of being emitted; once the replay is sent, the held ones newer
    than the replay are emitted in order. So the socket sees each seq once, in order.
    """

    def __init__(self, url: str, channel: str, **kwargs: Any) -> None:
        super().__init__(url, channel=channel, **kwargs)
        # socketio room -> sid -> held message payloads
        self._holds: dict[str | None, dict[str, list[dict[str, Any]]]] = defaultdict(dict)

    def hold(self, sid: str, sio_room: str) -> None:
        """Start keeping this room's live messages aside for ``sid``."""
        self._holds[sio_room][sid] = []

    def release(self, sid: str, sio_room: str) -> list[dict[str, Any]]:
        """Stop holding; return what was held, in arrival (= seq) order."""
        held = self._holds.get(sio_room, {}).pop(sid, [])
        if sio_room in self._holds and not self._holds[sio_room]:
            del self._holds[sio_room]
        return held

    def local_count(
        self, room: str | None, namespace: str = "/", skip: list[str] | None = None
    ) -> int:
        """How many of this node's sockets are in a Socket.IO room, but those in ``skip``."""
        members = self.rooms.get(namespace, {}).get(room) or {}
        return len(members) - sum(1 for sid in skip or () if sid in members)

    async def emit_local(self, event: str, data: Any, sid: str) -> None:
        """Emit to one socket of this node, without a round trip through Redis."""
        metrics.EVENTS_OUT.labels(event).inc()
        await self.server.emit(event, data, to=sid, ignore_queue=True)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        # None addresses every socket of the namespace, which the manager keeps as room None.
        room = message.get("room")
        event = str(message.get("event"))
        payload = message["data"][0] if message.get("data") else None
        skip = message.get("skip_sid") or []
        skip = [skip] if isinstance(skip, str) else list(skip)
        holders = self._holds.get(room)
        if holders and event == "message" and isinstance(payload, dict):
            for held in holders.values():
                held.append(payload)
            skip += list(holders)
            message = {**message, "skip_sid": skip}
        recipients = self.local_count(room, message.get("namespace") or "/", skip)
        if recipients > 0:
            metrics.EVENTS_OUT.labels(event).inc(recipients)
            if event == "message" and isinstance(payload, dict):
                accepted = _accepted_at(payload)
                if accepted is not None:
                    metrics.FANOUT_LATENCY.observe(max(0.0, time.time() - accepted))
            await super()._handle_emit(message)
