"""Command line: run a function host, list the registry, inspect and replay dead letters.

    python -m functions host [--only message,persist] [--port 8080] [--grace 20]
    python -m functions list
    python -m functions dead-letters list message [--limit 20]
    python -m functions dead-letters replay message (--ids 1700000000000-0,... | --all)

``--registry module:attribute`` (before the command) reads another registry: a sequence of
``Function`` declarations, or a mapping of name to ``Function`` (tests and benchmarks use it).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from chat.logs import configure_logging
from chat.settings import Settings
from functions import registry
from functions.deps import Deps
from functions.registry import Function
from functions.triggers import describe

T = TypeVar("T")


def load_registry(spec: str) -> dict[str, Function]:
    """The functions declared at ``module:attribute`` (the built-in registry when empty)."""
    if not spec:
        return dict(registry.REGISTRY)
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"--registry {spec!r} must be 'module:attribute'")
    found = getattr(importlib.import_module(module), attr)
    items = list(found.values()) if isinstance(found, Mapping) else list(found)
    if not all(isinstance(fn, Function) for fn in items):
        raise ValueError(f"{spec} must hold Function declarations")
    try:
        return registry.index(items)
    except ValueError as exc:
        raise ValueError(f"{spec}: {exc}") from None


def select(functions: Mapping[str, Function], only: Sequence[str]) -> list[Function]:
    """The named functions (all when ``only`` is empty); the error lists the valid names."""
    unknown = [n for n in only if n not in functions]
    if unknown:
        raise KeyError(f"no function {unknown[0]!r}; known: {', '.join(sorted(functions))}")
    return [functions[n] for n in only] if only else list(functions.values())


def _names(raw: str) -> list[str]:
    return [n.strip() for n in raw.split(",") if n.strip()]


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed (a cheaper loop per event), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _host(args: argparse.Namespace, functions: Mapping[str, Function]) -> int:
    from functions.runtime.host import Host

    try:
        host = Host(
            select(functions, _names(args.only)),
            Deps(Settings.from_env()),
            host=args.host,
            port=args.port,
            shutdown_grace_s=args.grace,
        )
    except ValueError as exc:
        # A setting, or an HTTP route without its endpoint: nothing has started yet.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_loop(host.serve())
    return 0


def _list(_: argparse.Namespace, functions: Mapping[str, Function]) -> int:
    for fn in functions.values():
        print(f"{fn.name:<12} {fn.handler:<32} {describe(fn.trigger)}")
    return 0


def _dead_letters(args: argparse.Namespace, functions: Mapping[str, Function]) -> int:
    from functions.runtime import dead_letters

    (fn,) = select(functions, [args.function])

    async def run() -> int:
        deps = Deps(Settings.from_env())
        try:
            if args.action == "list":
                for d in await dead_letters.list_dead_letters(fn, deps, args.limit):
                    row = {
                        "id": d.id,
                        "source": d.source,
                        "attempts": d.attempts,
                        "error": d.error,
                        "payload": d.payload,
                    }
                    print(json.dumps(row, ensure_ascii=False))
                return 0
            if not args.all and not args.ids:
                print("error: replay needs --ids or --all", file=sys.stderr)
                return 2
            ids = None if args.all else _names(args.ids)
            replayed = await dead_letters.replay(fn, deps, ids)
            print(f"replayed {len(replayed)} dead letters of {fn.name}")
            return 0
        except dead_letters.NoDeadLetters as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            await deps.aclose()

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(
        prog="python -m functions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--registry", default="", help="module:attribute of another registry")
    sub = parser.add_subparsers(dest="command", required=True)
    host = sub.add_parser("host", help="run a function host (all functions unless --only)")
    host.add_argument("--host", default="127.0.0.1")
    host.add_argument("--port", type=int, default=8080)
    host.add_argument("--only", default="", help="comma-separated function names")
    host.add_argument("--grace", type=float, default=20.0, help="shutdown bound in seconds")
    host.set_defaults(run=_host)
    sub.add_parser("list", help="list the registry").set_defaults(run=_list)
    letters = sub.add_parser("dead-letters", help="inspect or replay a function's dead letters")
    actions = letters.add_subparsers(dest="action", required=True)
    show = actions.add_parser("list", help="print dead letters, one JSON object a line")
    show.add_argument("function")
    show.add_argument("--limit", type=int, default=100)
    again = actions.add_parser("replay", help="put dead letters back on the function's input")
    again.add_argument("function")
    which = again.add_mutually_exclusive_group()
    which.add_argument("--ids", default="", help="comma-separated dead-letter ids")
    which.add_argument("--all", action="store_true", help="every dead letter")
    letters.set_defaults(run=_dead_letters)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        functions = load_registry(args.registry)
        # Names are checked before anything starts, so a typo never half-starts a host.
        select(functions, _names(getattr(args, "only", "")))
        select(functions, [args.function] if getattr(args, "function", None) else [])
    except (KeyError, ValueError, ImportError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    return int(args.run(args, functions))


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
