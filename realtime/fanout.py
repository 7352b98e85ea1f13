"""Cross-node fan-out through Redis pub/sub, holding live messages for sockets that replay."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import socketio


class FanoutManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """The Socket.IO Redis manager, plus per-socket holds during ``since_seq`` replay.

    While a socket replays a room's recent log, live ``message`` events for that room are
    kept aside for it instead of being emitted; once the replay is sent, the held ones newer
    than the replay are emitted in order. So the socket sees each seq once, in order.
    """

    def __init__(self, url: str, channel: str, **kwargs: Any) -> None:
        super().__init__(url, channel=channel, **kwargs)
        # socketio room -> sid -> held message payloads
        self._holds: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)

    def hold(self, sid: str, sio_room: str) -> None:
        """Start keeping this room's live messages aside for ``sid``."""
        self._holds[sio_room][sid] = []

    def release(self, sid: str, sio_room: str) -> list[dict[str, Any]]:
        """Stop holding; return what was held, in arrival (= seq) order."""
        held = self._holds.get(sio_room, {}).pop(sid, [])
        if sio_room in self._holds and not self._holds[sio_room]:
            del self._holds[sio_room]
        return held

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        holders = self._holds.get(message.get("room") or "")
        if holders and message.get("event") == "message":
            payload = message["data"][0] if message.get("data") else None
            if isinstance(payload, dict):
                for held in holders.values():
                    held.append(payload)
                skip = message.get("skip_sid") or []
                skip = [skip] if isinstance(skip, str) else list(skip)
                message = {**message, "skip_sid": skip + list(holders)}
        await super()._handle_emit(message)
