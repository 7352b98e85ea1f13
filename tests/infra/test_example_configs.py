"""The example stack configurations: every key is one the program reads, and the values load."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from unittest import mock

import pulumi
import pytest

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(REPO.glob("Pulumi.*.yaml.example"))


class RecordingConfig:
    """Answers ``infra.config.load`` from an example's values and notes every key it asks for."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.asked: set[str] = set()

    def get(self, key: str) -> str | None:
        self.asked.add(key)
        value = self.values.get(key)
        return None if value is None else str(value)

    def get_int(self, key: str) -> int | None:
        value = self.get(key)
        return None if value is None else int(value)

    def get_bool(self, key: str) -> bool | None:
        value = self.get(key)
        if value is None:
            return None
        assert value in {"true", "false"}, f"chat:{key} must be true or false, not {value!r}"
        return value == "true"

    def get_secret(self, key: str) -> str | None:
        return self.get(key)

    def require_secret(self, key: str) -> pulumi.Output[str]:
        value = self.get(key)
        assert value is not None, f"chat:{key} is required"
        return pulumi.Output.secret(value)


def _example(path: Path) -> dict[str, Any]:
    import yaml

    config: dict[str, Any] = yaml.safe_load(path.read_text())["config"]
    return config


def _load(path: Path) -> tuple[Any, RecordingConfig]:
    from infra.config import load

    chat = {}
    for key, value in _example(path).items():
        if key.startswith("chat:"):
            # A secure value stands for a secret the operator sets; any text will do here.
            chat[key.removeprefix("chat:")] = "secret" if isinstance(value, dict) else value
    recorder = RecordingConfig(chat)
    # Each secret Output is a task on the current loop: run them on a loop of their own, so
    # none is left pending to be reported in whatever test runs when it is collected.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with mock.patch.object(pulumi, "get_stack", return_value=path.name.split(".")[1]):
            config = load(recorder)  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop)))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return config, recorder


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"Pulumi.dev.yaml.example", "Pulumi.large.yaml.example"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_key_is_one_the_program_reads(path: Path) -> None:
    _, recorder = _load(path)
    config = _example(path)
    namespaces = {key.partition(":")[0] for key in config}
    assert namespaces <= {"aws", "chat"}, f"{path.name}: keys outside aws: and chat:"
    unread = {
        key
        for key in config
        if key.startswith("chat:") and key.removeprefix("chat:") not in recorder.asked
    }
    assert not unread, f"{path.name} sets keys infra/config.py does not read: {sorted(unread)}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_value_passes_the_configs_checks(path: Path) -> None:
    config, _ = _load(path)
    assert config.image and config.gateway_min <= config.gateway_max


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_secrets_are_secure_values(path: Path) -> None:
    config = _example(path)
    for key in ("chat:jwtSecret", "chat:redisAuthToken"):
        assert set(config[key]) == {"secure"}, f"{path.name}: {key} must be a secure value"


def test_the_large_example_is_the_sized_deployment() -> None:
    """docs/capacity.md sizes it; the example says so in the numbers it sets."""
    large = REPO / "Pulumi.large.yaml.example"
    config, _ = _load(large)
    values = _example(large)
    doc = (REPO / "docs" / "capacity.md").read_text()
    assert values["chat:redisClusterMode"] == "true" and config.redis_cluster_mode is True
    for figure in (
        f"{config.gateway_max} tasks",
        f"{values['chat:redisShards']} shards",
        f"{config.kafka_brokers} brokers",
        config.db_instance_class,
        config.redis_node_type,
    ):
        assert figure in doc, f"docs/capacity.md does not mention {figure!r} of the example"
