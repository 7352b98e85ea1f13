"""Forward-only migrations, recorded in a table, safe to re-run and to run concurrently."""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from dataclasses import dataclass
from importlib import resources

import psycopg

from chat.settings import Settings

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_ADVISORY_LOCK_ID = 0x43_48_41_54_4D_49_47

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The database and the migrations disagree, or the migration lock never came."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: ``NNNN_name.sql``, applied in one transaction."""

    version: str
    sql: str

    @property
    def checksum(self) -> str:
        """What the ledger records, so an edited applied migration is caught."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The packaged migrations, in version order."""
    folder = resources.files("functions.store.migrations")
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [Migration(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def _acquire(conn: psycopg.Connection[tuple[object, ...]], wait_s: float) -> None:
    # Polling instead of pg_advisory_lock: a migrator stuck elsewhere fails this one with a
    # message after wait_s instead of hanging a deploy forever.
    deadline = time.monotonic() + wait_s
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_ADVISORY_LOCK_ID,)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"another migrator held the migration lock for {wait_s:.0f}s; "
                "see pg_locks where locktype = 'advisory'"
            )
        time.sleep(0.2)


def migrate(dsn: str, *, lock_wait_s: float = 300.0, lock_timeout: str = "30s") -> list[str]:
    """Apply the migrations not yet applied; return their versions."""
    applied: list[str] = []
    known = migrations()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A session lock: a second migrator waits here, then finds nothing left to do.
        _acquire(conn, lock_wait_s)
        try:
            conn.execute(_LEDGER)
            done = {
                str(row[0]): str(row[1])
                for row in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            unknown = sorted(set(done) - {m.version for m in known})
            if unknown:
                # Forward-only: the database is ahead of this code (a rollback of the code, or a
                # newer process already migrated). Older code keeps working on a newer schema.
                log.warning("database has migrations this code does not know: %s", unknown)
            for migration in known:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                started = time.monotonic()
                with conn.transaction():
                    # A migration waiting on a busy table's lock queues every reader of it
                    # behind itself: give up after lock_timeout rather than stall the table.
                    conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (migration.version, migration.checksum),
                    )
                log.info(
                    "applied migration %s in %.2fs",
                    migration.version,
                    time.monotonic() - started,
                )
                applied.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_ID,))
    return applied


def main() -> None:
    """Command line: migrate the database named by CHAT_POSTGRES_DSN or --dsn."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: CHAT_POSTGRES_DSN)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dsn = args.dsn or Settings.from_env().postgres_dsn
    applied = migrate(dsn)
    print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")


if __name__ == "__main__":
    main()
