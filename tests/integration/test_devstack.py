"""The local stack: its services answer, it publishes its endpoints, it heals and stops cleanly."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient

from chat import names
from chat.settings import Settings
from devstack import Stack
from devstack.ports import port_free
from devstack.process import group_members
from devstack.testing import make_stack, start_or_fail, stop_and_remove

CONTRACT_KEYS = {
    "ws_urls",
    "entry_url",
    "http_url",
    "web_url",
    "redis_url",
    "redis_mode",
    "redis_nodes",
    "kafka_bootstrap",
    "postgres_dsn",
    "dev_auth",
    "jwt_secret",
    "pids",
}


@pytest.fixture(scope="module")
def small_stack() -> Iterator[Stack]:
    """A stack of its own with Redis and PostgreSQL only, for tests that kill and stop things."""
    stack = make_stack("chat-small-stack-", gateways=0, function_hosts=0, redis_mode="standalone")
    try:
        start_or_fail(stack, ["redis", "postgres"])
        yield stack
    finally:
        stop_and_remove(stack)


def test_services_answer(stack: Stack) -> None:
    for url in stack.redis_nodes().values():
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            assert client.ping()
        finally:
            client.close()

    with psycopg.connect(stack.postgres_dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == ("chat", "chat")

    topics = (
        AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10).topics
    )
    assert names.MESSAGES_TOPIC in topics, "provisioning should have created the topics"


def test_endpoints_file_follows_the_contract(stack: Stack) -> None:
    published = json.loads((stack.state_dir / "endpoints.json").read_text())

    assert set(published) == CONTRACT_KEYS
    assert published == json.loads(json.dumps(stack.endpoints()))
    assert published["web_url"] == published["entry_url"] + "/"
    assert published["dev_auth"] is True
    assert isinstance(published["jwt_secret"], str) and len(published["jwt_secret"]) >= 32
    assert published["redis_mode"] == stack.redis_mode
    assert [node["name"] for node in published["redis_nodes"]] == stack.redis_names()
    assert published["redis_url"] == published["redis_nodes"][0]["url"]
    for name in stack.services():
        assert published["pids"][name] == stack.pid(name)


def test_children_settings_parse(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)

    settings = Settings.from_env()

    assert settings.redis_url == stack.redis_url
    assert settings.redis_mode == stack.redis_mode
    assert settings.kafka_bootstrap == stack.kafka_bootstrap
    assert settings.postgres_dsn == stack.postgres_dsn
    assert settings.history_url == stack.http_url
    assert settings.dev_auth and settings.jwt_secret == stack.jwt_secret


def test_a_killed_component_comes_back_alone(small_stack: Stack) -> None:
    before = {name: small_stack.pid(name) for name in ("redis", "postgres")}

    small_stack.kill("redis", signal.SIGKILL)
    assert small_stack.pid("redis") is None
    small_stack.start(["redis", "postgres"])

    assert small_stack.pid("redis") not in (None, before["redis"])
    assert small_stack.pid("postgres") == before["postgres"]
    client = redis.Redis.from_url(small_stack.redis_url, socket_timeout=5)
    try:
        assert client.ping()
    finally:
        client.close()


def test_a_standalone_stack_names_one_redis(small_stack: Stack) -> None:
    published = json.loads((small_stack.state_dir / "endpoints.json").read_text())

    assert published["redis_mode"] == "standalone"
    assert published["redis_nodes"] == [{"name": "redis", "url": published["redis_url"]}]
    assert published["redis_url"] == f"redis://127.0.0.1:{small_stack.ports.redis}/0"
    assert set(published["pids"]) == {"redis", "postgres"}
    assert small_stack.env()["CHAT_REDIS_MODE"] == "standalone"
    assert small_stack.env()["CHAT_REDIS_WAIT_REPLICAS"] == "0"


def test_stop_leaves_no_process_and_frees_the_ports(small_stack: Stack) -> None:
    pids = [pid for name in ("redis", "postgres") if (pid := small_stack.pid(name))]
    assert len(pids) == 2
    ports = [small_stack.ports.redis, small_stack.ports.postgres]

    small_stack.stop()

    assert all(not group_members(pid) for pid in pids)
    assert all(port_free(port) for port in ports)
    assert small_stack.endpoints()["pids"] == {}
    assert not (small_stack.state_dir / "endpoints.json").exists()


def test_a_killed_gateway_rejoins_behind_the_entry_point(full_stack: Stack) -> None:
    components = full_stack.configured()
    before = {name: full_stack.pid(name) for name in components}
    assert None not in before.values()

    full_stack.kill("gateway-2")
    full_stack.start()

    after = {name: full_stack.pid(name) for name in components}
    assert after["gateway-2"] not in (None, before["gateway-2"])
    assert {n: p for n, p in after.items() if n != "gateway-2"} == {
        n: p for n, p in before.items() if n != "gateway-2"
    }
    with urllib.request.urlopen(full_stack.entry_url + "/healthz", timeout=5) as response:
        assert response.status == 200
    assert len(full_stack.endpoints()["ws_urls"]) == 2
