"""`make smoke URL=...` against the local stack's entry point, as CI runs it after a deploy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


def _smoke(url: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CHAT_JWT_SECRET"}
    if secret:
        env["CHAT_JWT_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "infra.smoke", url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("signed", [True, False], ids=["jwt", "dev-auth"])
def test_smoke_passes_through_the_entry_point(full_stack: Stack, signed: bool) -> None:
    done = _smoke(full_stack.entry_url, full_stack.jwt_secret if signed else None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "each user received the other's message" in done.stdout
    assert "history holds both messages in order" in done.stdout


def test_smoke_fails_with_a_wrong_secret(full_stack: Stack) -> None:
    done = _smoke(full_stack.entry_url, "not-the-stack-secret-0123456789abcdef")
    assert done.returncode == 1
    assert "could not connect" in done.stderr


def test_smoke_fails_where_nothing_listens() -> None:
    done = _smoke("http://127.0.0.1:9", None)
    assert done.returncode == 1
    assert "FAILED" in done.stderr
