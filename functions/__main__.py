"""Command line: run a function host, list the registry."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from chat.logs import configure_logging
from chat.settings import Settings
from functions import registry
from functions.deps import Deps
from functions.triggers import describe


def _host(args: argparse.Namespace) -> int:
    from functions.runtime.host import Host

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        selected = registry.select(only)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    host = Host(
        selected,
        Deps(Settings.from_env()),
        host=args.host,
        port=args.port,
        shutdown_grace_s=args.grace,
    )
    asyncio.run(host.serve())
    return 0


def _list(_: argparse.Namespace) -> int:
    for fn in registry.FUNCTIONS:
        print(f"{fn.name:<12} {fn.handler:<32} {describe(fn.trigger)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m functions", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    host = sub.add_parser("host", help="run a function host (all functions unless --only)")
    host.add_argument("--host", default="127.0.0.1")
    host.add_argument("--port", type=int, default=8080)
    host.add_argument("--only", default="", help="comma-separated function names")
    host.add_argument("--grace", type=float, default=20.0, help="shutdown bound in seconds")
    host.set_defaults(run=_host)
    sub.add_parser("list", help="list the registry").set_defaults(run=_list)
    args = parser.parse_args(argv)
    configure_logging()
    return int(args.run(args))


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
