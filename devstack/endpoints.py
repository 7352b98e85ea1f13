"""What a stack tells its clients: ``endpoints.json`` and the dev JWT secret, both kept in its
state dir."""

from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any


def dev_secret(state_dir: Path) -> str:
    """A random dev secret, made once per state dir and kept."""
    path = state_dir / "jwt_secret"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".jwt_secret.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(secrets.token_urlsafe(32))
        tmp.chmod(0o600)
        try:
            # Two processes may race: link() never overwrites, so one value wins for both.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


class EndpointsFile:
    """``endpoints.json``: rewritten when what it says changes, gone when nothing runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: str | None = None

    def publish(self, points: dict[str, Any]) -> None:
        """Write ``points``, or remove the file when they name no running pid."""
        if not points["pids"]:
            self.path.unlink(missing_ok=True)
            self._written = None
            return
        text = json.dumps(points, indent=2) + "\n"
        if text != self._written or not self.path.exists():
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o600)  # it holds the dev JWT secret
            tmp.replace(self.path)
            self._written = text
