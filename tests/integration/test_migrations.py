"""Migrations on real PostgreSQL: from empty, re-run, concurrent, tamper-evident, constraints."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest

from devstack import Stack
from functions.store.migrate import MigrationError, migrate, migrations


@pytest.fixture
def empty_db(stack: Stack) -> Iterator[str]:
    """A fresh database owned by the application's role; dropped afterwards."""
    name = f"mig_{uuid.uuid4().hex[:10]}"
    admin = f"postgresql://postgres@127.0.0.1:{stack.ports.postgres}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER chat")
    try:
        yield f"postgresql://chat@127.0.0.1:{stack.ports.postgres}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _ledger(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [r[0] for r in rows]


def test_from_empty_then_again(empty_db: str) -> None:
    versions = [m.version for m in migrations()]

    assert migrate(empty_db) == versions
    assert migrate(empty_db) == []
    assert _ledger(empty_db) == versions
    with psycopg.connect(empty_db) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert {"messages", "users", "rooms", "memberships", "room_daily_stats"} <= tables
    assert {"room_messages_per_day", "active_users_per_day", "busiest_rooms_7d"} <= tables


def test_concurrent_migrators_apply_each_migration_once(empty_db: str) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: migrate(empty_db), range(4)))

    applied = [r for r in results if r]
    assert len(applied) == 1, results
    assert applied[0] == _ledger(empty_db) == [m.version for m in migrations()]


def test_an_edited_applied_migration_is_refused(empty_db: str) -> None:
    migrate(empty_db)
    with psycopg.connect(empty_db) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = '0001_messages'")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_db)


def test_constraints_make_duplicates_impossible(empty_db: str) -> None:
    migrate(empty_db)
    now = datetime.now(UTC)
    insert = (
        "INSERT INTO messages (id, room, seq, sender, text, client_msg_id, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )
    first = uuid.uuid4()
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(insert, (first, "r", 1, "ann", "hi", "c1", now))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (first, "r", 2, "ann", "hi", "c1", now))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (uuid.uuid4(), "r", 1, "bob", "hi", "c9", now))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(insert, (uuid.uuid4(), "r", 0, "bob", "hi", "c9", now))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO rooms (name) VALUES ('has space')")
        conn.execute("INSERT INTO users (id) VALUES ('ann')")
        conn.execute("INSERT INTO rooms (name) VALUES ('r')")
        conn.execute("INSERT INTO memberships (room, user_id) VALUES ('r', 'ann')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO memberships (room, user_id) VALUES ('r', 'ann')")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO memberships (room, user_id) VALUES ('r', 'nobody')")
