"""Run one gateway node: python -m realtime --host 127.0.0.1 --port 8000."""

from __future__ import annotations

import argparse
import logging
import resource
import sys
from typing import Any

import uvicorn

from chat.logs import configure_logging
from chat.settings import Settings
from realtime.app import build_app
from realtime.lean import LeanWebSocketProtocol

log = logging.getLogger("realtime")

# Engine.IO frames its packets inside the WebSocket message: a little room above the payload cap.
_FRAME_OVERHEAD = 1024


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one: each socket holds a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit", extra={"soft": soft, "hard": hard})
    return soft


def server_options(max_payload_bytes: int) -> dict[str, Any]:
    """The uvicorn options of a gateway node (shared with the bench's bare Socket.IO server)."""
    return {
        "ws": "websockets-sansio",
        # Oversized frames are refused by the protocol layer before they are buffered whole.
        "ws_max_size": max_payload_bytes + _FRAME_OVERHEAD,
        # Engine.IO pings every socket already; a second, WebSocket-level ping only costs CPU.
        "ws_ping_interval": None,
        # A deflate context costs tens of KB per socket; chat frames are small, idle sockets many.
        "ws_per_message_deflate": False,
        # Idle sockets by the thousand: the backlog absorbs reconnect storms after a node dies.
        "backlog": 4096,
    }


def gateway_server_options(settings: Settings) -> dict[str, Any]:
    """A gateway node's uvicorn options: the shared ones, over the lean WebSocket protocol.

    ``LeanWebSocketProtocol`` is uvicorn's websockets-sansio with lean per-socket state; with the
    lean Engine.IO sockets of the gateway (``realtime.lean``) an idle socket costs 17 KB
    instead of 42 KB (``python -m bench sockets``).
    """
    return {**server_options(settings.max_payload_bytes), "ws": LeanWebSocketProtocol}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve the node until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m realtime", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    configure_logging()
    raise_fd_limit()
    settings = Settings.from_env()
    uvicorn.run(
        build_app(settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        **gateway_server_options(settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
