"""Lambda entry point that provisions inside the VPC: migrations, the application role, topics.

It runs as the database's master user (RDS keeps and rotates that password); everything else
logs in as the application role, whose password lives in its own secret. The role is created,
or its password set to the secret's, on every run, so the two never drift apart for long:

    {"reason": "deploy"}                 # what every deploy sends
    {"rotate_app_password": true}        # a new application password, then the role takes it
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from typing import Any

import psycopg
from psycopg import sql

from chat.clients import ensure_topics
from functions.aws.secrets import load_settings
from functions.store.migrate import migrate

log = logging.getLogger("functions.aws.provision")

# The secret (JSON {"username", "password"}) the application role logs in with.
APP_SECRET_ENV = "APP_DB_SECRET_ARN"
APP_USER_ENV = "APP_DB_USER"
DEFAULT_APP_USER = "chat_app"


def app_credentials(client: Any, secret_arn: str, user: str, *, rotate: bool = False) -> str:
    """The application role's password: the secret's, or a new one stored there first."""
    current: dict[str, str] | None = None
    # Created by the deploy without a value: the first run fills it.
    with contextlib.suppress(client.exceptions.ResourceNotFoundException):
        current = json.loads(client.get_secret_value(SecretId=secret_arn)["SecretString"])
    if current is None or rotate or current.get("username") != user:
        # Stored before the role takes it: a failure in between leaves a secret the next run
        # applies, never a role password nobody knows.
        current = {"username": user, "password": secrets.token_urlsafe(32)}
        client.put_secret_value(SecretId=secret_arn, SecretString=json.dumps(current))
        log.info("stored a new password for %s", user)
    return current["password"]


def ensure_app_role(dsn: str, user: str, password: str) -> None:
    """Create the application role (or set its password) with data rights and no DDL."""
    role = sql.Identifier(user)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
        conn.execute(
            sql.SQL("{} {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                verb, role, sql.Literal(password)
            )
        )
        database = sql.Identifier(conn.info.dbname)
        for statement in (
            # TEMPORARY: the persist function stages batches in a temp table.
            "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}",
            "GRANT USAGE ON SCHEMA public TO {role}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}",
            # Tables later migrations create (as this master user) come with the same rights.
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
            " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
            " GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
        ):
            conn.execute(sql.SQL(statement).format(db=database, role=role))


def handler(event: dict[str, Any], context: Any, client: Any = None) -> dict[str, Any]:
    """Migrate, create the application role and the missing topics; safe on every deploy."""
    # Read on every invocation: the master password may have been rotated since the last one.
    settings = load_settings(client)
    applied = migrate(settings.postgres_dsn)
    role: str | None = None
    secret_arn = os.environ.get(APP_SECRET_ENV)
    if secret_arn:
        if client is None:
            import boto3  # type: ignore[import-untyped]  # provided by the Lambda runtime

            client = boto3.client("secretsmanager")
        role = os.environ.get(APP_USER_ENV) or DEFAULT_APP_USER
        rotate = bool(event.get("rotate_app_password"))
        ensure_app_role(
            settings.postgres_dsn, role, app_credentials(client, secret_arn, role, rotate=rotate)
        )
    created = ensure_topics(settings)
    log.info(
        "provisioned: migrations %s, role %s, topics %s",
        applied or "up to date",
        role or "(none)",
        created or "present",
    )
    return {"migrations": applied, "role": role, "topics": created}
