"""pytest helpers: a throwaway stack in a temporary dir that fails loudly (never skips) in CI."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from redis.crc import key_slot

from devstack.components import RedisMode, StackError, redis_mode_from_env
from devstack.ports import Ports
from devstack.stack import Stack


def in_ci() -> bool:
    """True on CI (``CI=true``), where a stack that cannot start must fail the run."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def make_stack(
    prefix: str,
    gateways: int = 2,
    function_hosts: int = 1,
    redis_mode: RedisMode | None = None,
) -> Stack:
    """A stack in a fresh temp dir on free ports; skipped outside CI if the machine lacks parts.

    Its Redis is ``redis_mode``, by default what ``REDIS`` says (``REDIS=cluster pytest``).
    """
    try:
        mode = redis_mode or redis_mode_from_env()
    except ValueError as error:
        pytest.fail(str(error), pytrace=False)
    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    stack = Stack(state_dir, Ports.free(), gateways, function_hosts, durable=False, redis_mode=mode)
    missing = stack.missing()
    if missing:
        shutil.rmtree(state_dir, ignore_errors=True)
        message = f"the local stack needs {', '.join(missing)}: run scripts/bootstrap.sh"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return stack


def start_or_fail(stack: Stack, components: Iterable[str] | None = None) -> None:
    """Start components; a failure fails the test with the component's log tail and what to do."""
    try:
        stack.start(components)
    except StackError as error:
        pytest.fail(f"the local stack did not start:\n{error}", pytrace=False)


def redis_master_of(stack: Stack, key: str) -> str:
    """The cluster node (``redis-<n>``) whose master role serves ``key``'s slot now."""
    slot = key_slot(key.encode())
    for name, role in stack.redis_roles().items():
        if role.role == "master" and not role.failing and slot in role.slots:
            return name
    raise AssertionError(f"no live master serves slot {slot} of {key!r}: {stack.redis_roles()}")


def kill_master(stack: Stack, master: str, timeout: float = 30.0) -> tuple[str, float]:
    """``kill -9`` a cluster master (``redis-<n>``), wait for its replica to serve its slots.

    Returns the promoted node and the seconds from the kill until it served them.
    ``stack.start(["redis"])`` then brings the killed node back, as a replica of that one.
    """
    roles = stack.redis_roles()
    if roles[master].role != "master" or not roles[master].slots:
        raise AssertionError(f"{master} serves no slot as a master: {roles}")
    heirs = [name for name, role in roles.items() if role.master == master]
    if not heirs:
        raise AssertionError(f"{master} has no replica to take over: {roles}")
    stack.kill(master, signal.SIGKILL)
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        roles = stack.redis_roles()
        for heir in heirs:
            if roles[heir].role == "master" and roles[heir].slots:
                return heir, time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"no replica of {master} ({', '.join(heirs)}) took over in {timeout}s")


def stop_and_remove(stack: Stack) -> None:
    """Stop every process of the stack, then delete its state (kept when ``DEVSTACK_KEEP=1``)."""
    stack.stop()
    if os.environ.get("DEVSTACK_KEEP") != "1":
        shutil.rmtree(stack.state_dir, ignore_errors=True)
