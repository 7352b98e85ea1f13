"""Forward-only migrations, recorded in a table, safe to re-run and to run concurrently."""

from __future__ import annotations

import argparse
import hashlib
import logging
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


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("chat.migrations")
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet applied; return their versions."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A session lock: a second migrator waits here, then finds nothing left to do.
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_ID,))
        try:
            conn.execute(_LEDGER)
            done = {
                row[0]: row[1]
                for row in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            for version, sql in _migrations():
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        raise RuntimeError(
                            f"migration {version} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (version, checksum),
                    )
                log.info("applied migration %s", version)
                applied.append(version)
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
