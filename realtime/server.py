"""The node's Socket.IO server: python-socketio's, with lean Engine.IO sockets, a connect
deadline and binary packets refused before their attachments are kept."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import socketio
from socketio import packet as sio_packet

from chat.contract import ErrorCode, error_ack
from chat.settings import Settings
from realtime import metrics
from realtime.fanout import abort_websocket
from realtime.lean import LeanEngineIOServer


def socket_origins(origins: tuple[str, ...]) -> tuple[str | list[str] | None, bool]:
    """Engine.IO's allowed origins and whether to allow credentials, from CHAT_CORS_ORIGINS.

    Empty: the page's own origin only (Engine.IO compares Origin with Host and the forwarded
    host). ``*`` (dev only): any origin, never with credentials. Else the listed origins.
    """
    if origins == ("*",):
        return "*", False
    return (list(origins) or None), True


# A Socket.IO binary event or ack: ``5<attachments>-[/namespace,][id]<json>``.
_BINARY_HEADER = re.compile(r"[56]([0-9]+)-(?:(/[^,\[]*),)?([0-9]*)")
_BINARY_REFUSED = "binary attachments are not supported: send text fields as JSON strings"


class GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, refusing binary packets before their attachments are kept.

    python-socketio keeps a binary event's header and then every attachment frame the client
    sends until the declared count is reached; the contract has no binary payloads. Here a
    binary event gets an error ack (when it asks for one) and nothing of it is kept: its
    attachment frames, like any binary frame, are dropped as they arrive.
    """

    def __init__(self, *args: Any, connect_timeout_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout_s = connect_timeout_s
        self._closing: set[asyncio.Task[None]] = set()

    def _engineio_server_class(self) -> type[LeanEngineIOServer]:
        # Engine.IO sockets that hold no task while idle (realtime.lean).
        return LeanEngineIOServer

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> None:
        await super()._handle_eio_connect(eio_sid, environ)
        # An Engine.IO session that never completes the Socket.IO connect is closed.
        asyncio.get_running_loop().call_later(self.connect_timeout_s, self._expire, eio_sid)

    def _expire(self, eio_sid: str) -> None:
        if eio_sid not in self.eio.sockets or self.manager.sid_from_eio_sid(eio_sid, "/"):
            return
        metrics.UNAUTHENTICATED_CLOSED.inc()
        abort_websocket(self, eio_sid)
        task = asyncio.get_running_loop().create_task(self.eio.disconnect(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if isinstance(data, str) and not data.startswith(("5", "6")):
            await super()._handle_eio_message(eio_sid, data)
            return
        metrics.BINARY_REFUSED.inc()
        if not isinstance(data, str):
            return
        metrics.ERRORS.labels(str(ErrorCode.BINARY_NOT_SUPPORTED)).inc()
        header = _BINARY_HEADER.match(data)
        if header is None or not header.group(3) or data[0] != "5":
            return
        namespace = header.group(2) or "/"
        if self.manager.sid_from_eio_sid(eio_sid, namespace) is None:
            return
        metrics.ACKS.labels("binary", str(ErrorCode.BINARY_NOT_SUPPORTED)).inc()
        refusal = error_ack(ErrorCode.BINARY_NOT_SUPPORTED, _BINARY_REFUSED)
        await self._send_packet(
            eio_sid,
            self.packet_class(
                sio_packet.ACK, namespace=namespace, data=[refusal], id=int(header.group(3))
            ),
        )


def socket_server(settings: Settings) -> GatewayServer:
    """The node's Socket.IO server, configured from ``settings``.

    Sockets and Socket.IO rooms are this node's alone; rooms reach other nodes through their
    sharded channels (``RoomFanout``), not through a Socket.IO message queue.
    """
    origins, credentials = socket_origins(settings.cors_origins)
    return GatewayServer(
        async_mode="asgi",
        client_manager=socketio.AsyncManager(),
        cors_allowed_origins=origins,
        cors_credentials=credentials,
        max_http_buffer_size=settings.max_payload_bytes,
        connect_timeout_s=settings.connect_timeout_s,
        ping_interval=20,
        ping_timeout=20,
        logger=False,
        engineio_logger=False,
    )
