"""Database credentials on AWS: the application role, and connecting again after a rotation.

PostgreSQL is the test stack's, which trusts local logins: the password check itself is the one
thing simulated, a connect refused as PostgreSQL refuses a stale password. The secret side of
a rotation (moto) is in tests/unit/test_aws_moto.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from chat import clients
from devstack import Stack
from functions.aws.provision import ensure_app_role

REGION = "eu-west-1"


@pytest.fixture
def refused_once(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The server refuses the first connect as PostgreSQL refuses a stale password."""
    attempts: list[str] = []
    real = psycopg.AsyncConnection.connect

    async def connect(*args: Any, **kwargs: Any) -> Any:
        attempts.append("connect")
        if len(attempts) == 1:
            raise psycopg.OperationalError(
                'connection failed: FATAL:  password authentication failed for user "chat_app"'
            )
        return await real(*args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    yield attempts
    clients.on_password_refused(None)


@pytest.mark.integration
async def test_a_refused_password_is_reloaded_and_the_pool_connects(
    stack: Stack, refused_once: list[str]
) -> None:
    reloads: list[str] = []

    def reload() -> bool:
        reloads.append("reload")
        return True

    clients.on_password_refused(reload)
    conn = await clients._Connection.connect(stack.postgres_dsn, autocommit=True)
    try:
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    finally:
        await conn.close()
    assert refused_once == ["connect", "connect"]
    assert reloads == ["reload"]


@pytest.mark.integration
async def test_an_unchanged_secret_gives_up_with_the_servers_error(
    stack: Stack, refused_once: list[str]
) -> None:
    clients.on_password_refused(lambda: False)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await clients._Connection.connect(stack.postgres_dsn)
    assert refused_once == ["connect"]


@pytest.mark.integration
def test_the_application_role_reads_and_writes_but_changes_no_schema(stack: Stack) -> None:
    role = f"app_{uuid.uuid4().hex[:8]}"
    # Provisioning runs as RDS's master user, who may create roles: here the superuser.
    master = psycopg.conninfo.make_conninfo(stack.postgres_dsn, user="postgres")
    ensure_app_role(master, role, "first-password")
    # Twice: the second run only sets the password again.
    ensure_app_role(master, role, "second-password")
    app_dsn = psycopg.conninfo.make_conninfo(stack.postgres_dsn, user=role)
    try:
        with psycopg.connect(app_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            conn.execute("SELECT count(*) FROM messages").fetchone()
            conn.execute("CREATE TEMP TABLE staged (id int)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE TABLE not_allowed (id int)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DROP TABLE messages")
    finally:
        with psycopg.connect(master, autocommit=True) as admin:
            for statement in ("DROP OWNED BY {}", "DROP ROLE {}"):
                admin.execute(psycopg.sql.SQL(statement).format(psycopg.sql.Identifier(role)))


@pytest.mark.integration
def test_gauges_publish_dead_letter_depth_and_stream_lag(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import redis
    from moto import mock_aws

    from chat.settings import Settings
    from functions.aws.gauges import measure, publish
    from functions.registry import Function
    from functions.triggers import RedisStream

    tag = uuid.uuid4().hex[:8]
    fn = Function(
        name=f"gauged-{tag}",
        handler="functions.message:handle",
        trigger=RedisStream(stream=f"g:{{{tag}}}", group="g", dead_letter=f"g:{{{tag}}}:dead"),
    )
    settings = Settings.from_env(stack.env(), environment="test")
    r = redis.Redis.from_url(settings.redis_url)
    r.xgroup_create(fn.trigger.stream, "g", id="0", mkstream=True)
    for i in range(3):
        r.xadd(fn.trigger.stream, {"n": str(i)})
    r.xadd(fn.trigger.dead_letter, {"n": "poison"})
    gauges = {(g.metric, g.dimension[1]): g.value for g in measure(settings, [fn])}
    assert gauges == {("DeadLetters", f"g:{{{tag}}}:dead"): 1, ("StreamLag", fn.name): 3}
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        cloudwatch = boto3.client("cloudwatch")
        publish(cloudwatch, "Chat/test", measure(settings, [fn]))
        listed = cloudwatch.list_metrics(Namespace="Chat/test")["Metrics"]
        assert {(m["MetricName"], m["Dimensions"][0]["Value"]) for m in listed} == set(gauges)
