"""pytest helpers: a throwaway stack in a temporary dir that fails loudly (never skips) in CI."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from devstack.ports import Ports
from devstack.stack import Stack, StackError


def in_ci() -> bool:
    """True on CI (``CI=true``), where a stack that cannot start must fail the run."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def make_stack(prefix: str, gateways: int = 2, function_hosts: int = 1) -> Stack:
    """A stack in a fresh temp dir on free ports; skipped outside CI if the machine lacks parts."""
    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    stack = Stack(state_dir, Ports.free(), gateways, function_hosts, durable=False)
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


def stop_and_remove(stack: Stack) -> None:
    """Stop every process of the stack, then delete its state (kept when ``DEVSTACK_KEEP=1``)."""
    stack.stop()
    if os.environ.get("DEVSTACK_KEEP") != "1":
        shutil.rmtree(stack.state_dir, ignore_errors=True)
