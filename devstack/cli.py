"""Command line: ``python -m devstack dev|start|stop|status``."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devstack.components import REDIS_MODES, REPO, StackError, redis_mode_from_env
from devstack.ports import Ports
from devstack.stack import Stack

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Ctrl-C reaches make and us both; the second copy must not cut the shutdown short.
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def _on_signals() -> None:
    for sig in _SIGNALS:
        signal.signal(sig, _interrupt)


def _stop_quietly(stack: Stack) -> None:
    """Stop everything, deaf to further signals so that nothing is left half-stopped."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    print("stopping the stack ...", flush=True)
    stack.stop()
    print("stopped.", flush=True)


def _summary(stack: Stack) -> str:
    points = stack.endpoints()
    rows = [
        ("chat page", points["web_url"]),
        ("entry (load-balanced)", points["entry_url"]),
        ("gateway nodes", ", ".join(points["ws_urls"])),
        ("history (functions)", points["http_url"]),
        *_redis_rows(stack),
        ("kafka", points["kafka_bootstrap"]),
        ("postgres", points["postgres_dsn"]),
        ("endpoints file", str(stack.state_dir / "endpoints.json")),
        ("logs", str(stack.logs_dir) + "/"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def _redis_rows(stack: Stack) -> list[tuple[str, str]]:
    if stack.redis_mode == "standalone":
        return [("redis", stack.redis_url)]
    ports = ", ".join(str(stack.component(name).port) for name in stack.redis_names())
    return [("redis cluster (seed)", stack.redis_url), ("redis cluster nodes", f"ports {ports}")]


def _redis_arg(stack: Stack) -> str:
    return " REDIS=cluster" if stack.redis_mode == "cluster" else ""


def _dev(stack: Stack) -> int:
    """Run in the foreground until Ctrl-C; then stop everything."""
    _on_signals()
    began = time.monotonic()
    try:
        stack.start()
        print(
            f"\nthe chat stack is up ({time.monotonic() - began:.1f}s):\n{_summary(stack)}",
            flush=True,
        )
        print("\nCtrl-C stops everything.", flush=True)
        reported: set[str] = set()
        while True:
            time.sleep(1.0)
            for name in stack.configured():
                if stack.pid(name) is not None:
                    reported.discard(name)
                elif name not in reported:
                    reported.add(name)
                    print(
                        f"{name} is no longer running (log: {stack.log_path(name)}); "
                        f"`make dev-start{_redis_arg(stack)}` in another shell brings it back.",
                        flush=True,
                    )
    except KeyboardInterrupt:
        stack.cancel()
        return 0
    except StackError as error:
        print(f"\n{error}", file=sys.stderr, flush=True)
        return 1
    finally:
        _stop_quietly(stack)


def _start(stack: Stack) -> int:
    """Start what is missing and return once everything answers."""
    began = time.monotonic()
    _on_signals()
    try:
        stack.start()
    except KeyboardInterrupt:
        stack.cancel()
        print(
            "start interrupted; what had started keeps running (make dev-stop stops it).",
            file=sys.stderr,
        )
        return 130
    except StackError as error:
        print(f"\n{error}", file=sys.stderr, flush=True)
        return 1
    print(
        f"\nthe chat stack is up ({time.monotonic() - began:.1f}s):\n{_summary(stack)}", flush=True
    )
    print("\n`make dev-stop` stops it.", flush=True)
    return 0


def _status(stack: Stack) -> int:
    """One line per component: port and pid; non-zero when a configured one is down."""
    configured = set(stack.configured())
    down = 0
    for name in stack.components():
        pid = stack.pid(name)
        state = f"running (pid {pid})" if pid else "not running"
        down += pid is None and name in configured
        print(f"  {name:<12} 127.0.0.1:{stack.component(name).port:<6} {state}")
    return 3 if down else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the verb."""
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("verb", choices=["dev", "start", "stop", "status"])
    parser.add_argument(
        "--state-dir", type=Path, default=REPO / ".devstack", help="default: .devstack/"
    )
    parser.add_argument(
        "--gateways", type=int, default=2, help="gateway nodes behind the entry point"
    )
    parser.add_argument("--function-hosts", type=int, default=1, help="function host processes")
    parser.add_argument(
        "--redis",
        choices=REDIS_MODES,
        help="one Redis server, or a Redis Cluster of 3 masters and 3 replicas "
        "(default: $REDIS, else standalone)",
    )
    args = parser.parse_args(argv)
    try:
        stack = Stack(
            args.state_dir,
            Ports.defaults(),
            args.gateways,
            args.function_hosts,
            redis_mode=args.redis or redis_mode_from_env(),
        )
    except (ValueError, StackError) as error:
        print(error, file=sys.stderr)
        return 2
    match args.verb:
        case "dev":
            return _dev(stack)
        case "start":
            return _start(stack)
        case "stop":
            stack.stop()
            print("the local stack is stopped.")
            return 0
        case _:
            return _status(stack)
