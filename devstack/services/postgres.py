"""PostgreSQL: one cluster in the state dir, with the application's role and database."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import psycopg

from devstack import health
from devstack.components import HOST, Component, StackError
from devstack.process import run
from devstack.services.base import Launch, Service


def postgres_bindir() -> Path:
    """Where PostgreSQL's server binaries live (``DEVSTACK_PG_BIN`` wins)."""
    override = os.environ.get("DEVSTACK_PG_BIN")
    candidates = [Path(override)] if override else []
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise StackError(
        "PostgreSQL server binaries not found: run scripts/bootstrap.sh (installs postgresql)"
    )


class Postgres(Service):
    """The stack's PostgreSQL."""

    kind = "postgres"
    tier = 0
    start_timeout_s = 60
    # SIGINT is its "fast" shutdown: roll back sessions, checkpoint, exit.
    stop_signal = signal.SIGINT
    stop_grace_s = 30

    def port(self, index: int) -> int:
        return self.site.ports.postgres

    @property
    def dsn(self) -> str:
        """DSN of the application's database, as its role."""
        return f"postgresql://chat@{HOST}:{self.site.ports.postgres}/chat"

    @property
    def admin_dsn(self) -> str:
        """DSN of the maintenance database, as the superuser."""
        return f"postgresql://postgres@{HOST}:{self.site.ports.postgres}/postgres"

    def hint(self) -> str:
        return f"if the cluster is damaged, remove {self.site.state_dir / 'postgres'}"

    def missing(self) -> list[str]:
        try:
            postgres_bindir()
        except StackError:
            return ["PostgreSQL server binaries"]
        return []

    def prepare(self, component: Component) -> Launch:
        bindir = postgres_bindir()
        home = self.site.state_dir / "postgres"
        data, sockets = home / "data", home / "socket"
        sockets.mkdir(parents=True, exist_ok=True)
        # PostgreSQL refuses root: then it runs as the postgres user, who must reach its files.
        user = "postgres" if os.geteuid() == 0 else None
        if user is not None:
            account = _account(user)
            self._grant_traverse(home, account)
            for path in (home, sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        if not (data / "PG_VERSION").exists():
            if data.exists():
                shutil.rmtree(data)  # a half-made cluster from an interrupted initdb
            self.site.say("postgres: creating the cluster (initdb)")
            argv = [
                str(bindir / "initdb"),
                "-D", str(data),
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ]  # fmt: skip
            if not self.site.durable:
                argv.append("--no-sync")
            log = self.site.log_path(component.name)
            code = run(argv, log=log, timeout=120, cwd=home, user=user)
            if code != 0:
                raise self.failure(component, f"initdb failed with code {code}")
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(sockets),
            # Function hosts, gateways and test clients each hold pools: more than the default 100.
            "max_connections": "200",
        }
        if not self.site.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(component.port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return Launch(argv, user)

    def probe(self, component: Component) -> Callable[[], bool]:
        return lambda: health.postgres_ready(self.admin_dsn)

    def after_ready(self, component: Component) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'chat'").fetchone() is None:
                conn.execute("CREATE ROLE chat LOGIN")
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'chat'").fetchone() is None:
                conn.execute("CREATE DATABASE chat OWNER chat")

    def _grant_traverse(self, path: Path, account: pwd.struct_passwd) -> None:
        """Let ``account`` reach ``path``: o+x on the parents it cannot cross, nothing more."""
        groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
        for parent in [path, *path.parents]:
            info = parent.stat()
            if info.st_uid == account.pw_uid:
                allowed = bool(info.st_mode & stat.S_IXUSR)
            elif info.st_gid in groups:
                allowed = bool(info.st_mode & stat.S_IXGRP)
            else:
                allowed = bool(info.st_mode & stat.S_IXOTH)
            if not allowed:
                parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
                self.site.say(
                    f"postgres: allowed others to traverse {parent} (o+x) "
                    f"so the {account.pw_name} user reaches its data"
                )


def _account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise StackError(
            f"there is no {user!r} user to run PostgreSQL as (it refuses root): "
            f"run scripts/bootstrap.sh (installing postgresql creates it)"
        ) from None
