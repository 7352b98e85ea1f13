"""Run one gateway node: python -m realtime --host 127.0.0.1 --port 8000."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from chat.logs import configure_logging
from realtime.app import build_app


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve the node until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m realtime", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    configure_logging()
    uvicorn.run(
        build_app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
