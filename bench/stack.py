"""A throwaway local stack for a benchmark: free loopback ports, a temp dir, removed afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from devstack.ports import Ports
from devstack.stack import RedisMode, Stack


@contextmanager
def private_stack(
    components: Sequence[str] | None = None,
    *,
    gateways: int = 0,
    function_hosts: int = 0,
    durable: bool = False,
    redis_mode: RedisMode = "standalone",
) -> Iterator[Stack]:
    """Start ``components`` (all of them when None) of a fresh stack; stop and remove it after."""
    state = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    stack = Stack(
        state, Ports.free(), gateways, function_hosts, durable=durable, redis_mode=redis_mode
    )
    try:
        missing = stack.missing()
        if missing:
            raise SystemExit(
                f"the local stack needs {', '.join(missing)}: run scripts/bootstrap.sh"
            )
        stack.start(None if components is None else list(components))
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)
