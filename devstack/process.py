"""Child processes that outlive their starter: spawned in a session, found by pid file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Record:
    """What a pid file says about one running component."""

    name: str
    pid: int
    # Kernel start time of the pid: a recycled pid has another, so it is never taken for ours.
    started: int
    port: int
    argv: tuple[str, ...]

    def save(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a record."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Record | None:
        """The record at ``path``, or None when missing or unreadable."""
        try:
            raw = json.loads(path.read_text())
            return cls(
                name=str(raw["name"]),
                pid=int(raw["pid"]),
                started=int(raw["started"]),
                port=int(raw["port"]),
                argv=tuple(str(a) for a in raw["argv"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks, None when there is no such process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, started: int | None = None) -> bool:
    """True when ``pid`` runs (a zombie does not) and, if given, started at ``started``."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (it outlives us), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )


def run(
    argv: Sequence[str],
    *,
    log: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    """Run a one-off command (killed after ``timeout``), output appended to ``log``."""
    proc = spawn(argv, log=log, env=env, cwd=cwd, user=user)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        with log.open("ab") as out:
            out.write(f"=== killed after {timeout:.0f}s\n".encode())
        return -signal.SIGKILL


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to every process of the group; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def wait_gone(
    pid: int, started: int | None, timeout: float, child: subprocess.Popen[bytes] | None
) -> bool:
    """Wait up to ``timeout`` for ``pid`` to end (reaping our child); True if it did."""
    deadline = time.monotonic() + timeout
    while True:
        if child is not None:
            child.poll()
        if not alive(pid, started):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(
    pid: int,
    started: int | None,
    *,
    first: int,
    grace: float,
    child: subprocess.Popen[bytes] | None = None,
) -> bool:
    """Stop the group led by ``pid``: ``first``, then SIGKILL; True if ``first`` sufficed."""
    clean = True
    if alive(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first)
        if not wait_gone(pid, started, grace, child):
            clean = False
            signal_group(pid, signal.SIGKILL)
            wait_gone(pid, started, 5.0, child)
    # The leader is gone; whatever it left in its group (workers, backends) must not outlive it.
    deadline = time.monotonic() + 5.0
    while group_members(pid) and time.monotonic() < deadline:
        signal_group(pid, signal.SIGKILL)
        time.sleep(0.05)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
    return clean


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (empty when there is none)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
