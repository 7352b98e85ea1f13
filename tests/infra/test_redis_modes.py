"""Redis on ElastiCache with and without cluster mode: one switch, the same processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi_mocks import IMAGE, TOKEN, Deployed, RecordingMocks, running

pytestmark = [
    pytest.mark.timeout(60),
    # pulumi_aws warns on import about its own deprecated resource modules.
    pytest.mark.filterwarnings(r"ignore:.*deprecated:DeprecationWarning:pulumi_aws\..*"),
]

GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
PARAMS = "aws:elasticache/parameterGroup:ParameterGroup"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
LAMBDA = "aws:lambda/function:Function"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
REDIS_ENV = ("CHAT_REDIS_MODE", "CHAT_INBOUND_PARTITIONS", "CHAT_REDIS_WAIT_REPLICAS")
EXAMPLE = Path(__file__).resolve().parents[2] / "Pulumi.dev.yaml.example"


def _plain(value: Any) -> Any:
    """A secret input's value (the engine wraps secrets in a signed envelope)."""
    return value["value"] if isinstance(value, dict) and "value" in value else value


def _without_token(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if k != "authToken"}


def _container(task: Any) -> dict[str, Any]:
    (container,) = json.loads(task.inputs["containerDefinitions"])
    assert isinstance(container, dict)
    return container


def _environments(stack: Deployed) -> dict[str, dict[str, str]]:
    """Every gateway's, bridge's and Lambda's environment, by resource name."""
    found = {
        lam.name: dict(lam.inputs["environment"]["variables"]) for lam in stack.of_type(LAMBDA)
    }
    for task in stack.of_type(TASK):
        found[task.name] = {e["name"]: e["value"] for e in _container(task)["environment"]}
    return found


def test_without_cluster_mode_redis_is_declared_as_before(deployed: Deployed) -> None:
    # Exactly what the stack declared before cluster mode existed: an existing stack's
    # preview shows no change to its Redis.
    group = deployed.named(GROUP, "chat-test-redis")
    assert _without_token(group.inputs) == {
        "atRestEncryptionEnabled": True,
        "automaticFailoverEnabled": True,
        "description": "chat-test-redis: streams, recent logs, fan-out",
        "engine": "redis",
        "engineVersion": "7.1",
        "multiAzEnabled": True,
        "nodeType": "cache.t4g.small",
        "numCacheClusters": 2,
        "parameterGroupName": "chat-test-redis",
        "port": 6379,
        "securityGroupIds": ["chat-test-redis-id"],
        "snapshotRetentionLimit": 3,
        "subnetGroupName": "chat-test-redis",
        "transitEncryptionEnabled": True,
    }
    assert _plain(group.inputs["authToken"]) == TOKEN
    params = deployed.named(PARAMS, "chat-test-redis")
    assert params.inputs == {
        "description": "Managed by Pulumi",
        "family": "redis7",
        "parameters": [{"name": "maxmemory-policy", "value": "noeviction"}],
    }
    assert [g.name for g in deployed.of_type(GROUP)] == ["chat-test-redis"]


def test_both_modes_declare_the_same_resources_but_the_redis_group(
    deployed: Deployed, clustered: Deployed
) -> None:
    def inventory(stack: Deployed, group: str) -> set[tuple[str, str]]:
        every = {(r.type, r.name) for r in stack.mocks.resources}
        redis = {(GROUP, group), (PARAMS, group)}
        assert redis <= every
        return every - redis

    assert inventory(deployed, "chat-test-redis") == inventory(clustered, "chat-test-redis-cluster")


def test_cluster_mode_declares_shards_of_a_primary_and_replicas(clustered: Deployed) -> None:
    group = clustered.named(GROUP, "chat-test-redis-cluster")
    inputs = group.inputs
    assert inputs["clusterMode"] == "enabled"
    assert (inputs["numNodeGroups"], inputs["replicasPerNodeGroup"]) == (4, 2)
    assert "numCacheClusters" not in inputs, "conflicts with node groups"
    assert inputs["automaticFailoverEnabled"] is True
    assert inputs["multiAzEnabled"] is True
    assert inputs["transitEncryptionEnabled"] is True
    assert inputs["atRestEncryptionEnabled"] is True
    assert _plain(inputs["authToken"]) == TOKEN
    assert inputs["nodeType"] == "cache.t4g.small"
    params = clustered.named(PARAMS, "chat-test-redis-cluster")
    assert inputs["parameterGroupName"] == params.inputs.get("name", params.name)
    assert params.inputs["family"] == "redis7"
    assert {p["name"]: p["value"] for p in params.inputs["parameters"]} == {
        "cluster-enabled": "yes",
        "maxmemory-policy": "noeviction",
    }


@pytest.mark.parametrize(
    ("shape", "host"),
    [
        ("deployed", "master.chat-test-redis.cache.amazonaws.com"),
        ("clustered", "clustercfg.chat-test-redis-cluster.cache.amazonaws.com"),
    ],
)
def test_every_process_reads_the_url_from_one_secret(
    request: pytest.FixtureRequest, shape: str, host: str
) -> None:
    stack: Deployed = request.getfixturevalue(shape)
    version = stack.named(SECRET_VERSION, "chat-test-redis-url")
    assert _plain(version.inputs["secretString"]) == f"rediss://:{TOKEN}@{host}:6379/0"
    secret = stack.named(SECRET, "chat-test-redis-url")
    arn = f"arn:aws:secretsmanager:eu-west-1:123456789012:{secret.name}"
    for lam in stack.of_type(LAMBDA):
        secrets = json.loads(lam.inputs["environment"]["variables"]["CHAT_AWS_SECRETS"])
        assert secrets["CHAT_REDIS_URL"] == arn, lam.name
    tasks = stack.of_type(TASK)
    assert {t.name for t in tasks} >= {"chat-test-gateway", "chat-test-message-bridge"}
    for task in tasks:
        secrets = {s["name"]: s["valueFrom"] for s in _container(task)["secrets"]}
        assert secrets["CHAT_REDIS_URL"] == arn, task.name


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("deployed", ("standalone", "8", "1")),
        ("clustered", ("cluster", "16", "1")),
    ],
)
def test_gateways_bridges_and_every_lambda_get_the_redis_settings(
    request: pytest.FixtureRequest, shape: str, expected: tuple[str, str, str]
) -> None:
    stack: Deployed = request.getfixturevalue(shape)
    environments = _environments(stack)
    lambdas = {lam.name for lam in stack.of_type(LAMBDA)}
    assert {"chat-test-provision", "chat-test-gauges", "chat-test-message"} <= lambdas
    assert {"chat-test-gateway", "chat-test-message-bridge"} <= set(environments)
    for name, env in environments.items():
        assert tuple(env.get(k) for k in REDIS_ENV) == expected, name


def test_alarms_on_redis_are_the_same_in_both_modes(
    deployed: Deployed, clustered: Deployed
) -> None:
    def watched(stack: Deployed) -> set[tuple[str, str]]:
        return {
            (a.inputs["metricName"], json.dumps(a.inputs["dimensions"], sort_keys=True))
            for a in stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
            if a.inputs["metricName"] in {"StreamLag", "DeadLetters"}
        }

    assert watched(deployed) and watched(deployed) == watched(clustered)
    gauges = _environments(clustered)["chat-test-gauges"]
    assert gauges["GAUGES_NAMESPACE"] == "Chat/chat-test"


def test_without_replicas_acks_do_not_wait_and_nothing_fails_over(
    tmp_path: Path, thread_loops: None
) -> None:
    with running(tmp_path, stack="solo", redis_cluster_mode=True, redis_replicas=0) as stack:
        group = stack.named(GROUP, "chat-solo-redis-cluster")
        environments = _environments(stack)
    assert (group.inputs["numNodeGroups"], group.inputs["replicasPerNodeGroup"]) == (3, 0)
    # ElastiCache requires automatic failover in cluster mode; Multi-AZ needs a replica.
    assert group.inputs["automaticFailoverEnabled"] is True
    assert group.inputs["multiAzEnabled"] is False
    for name, env in environments.items():
        assert env["CHAT_REDIS_WAIT_REPLICAS"] == "0", name


@pytest.fixture
def stack_config() -> Iterator[dict[str, str]]:
    """The ``chat:*`` configuration ``infra.config.load`` reads, set by the test."""
    from pulumi.runtime import config as runtime_config

    # Secret outputs need a current loop; the config, its own restore.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(RecordingMocks(), project="chat", stack="cfg", preview=True)
    before = dict(runtime_config.CONFIG.get())
    try:
        yield {"chat:image": IMAGE, "chat:jwtSecret": "j" * 32, "chat:redisAuthToken": TOKEN}
    finally:
        runtime_config.set_all_config(before)
        # Let the secrets the loaded configs hold settle, so no task dies pending.
        pending = asyncio.all_tasks(loop)
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=5))
        asyncio.set_event_loop(None)
        loop.close()


def _load(values: dict[str, str]) -> Any:
    from pulumi.runtime import config as runtime_config

    from infra import config

    runtime_config.set_all_config(values, ["chat:jwtSecret", "chat:redisAuthToken"])
    return config.load()


def test_config_reads_the_redis_keys(stack_config: dict[str, str]) -> None:
    cfg = _load(stack_config)
    assert (cfg.redis_cluster_mode, cfg.redis_shards, cfg.redis_replicas) == (False, 3, 1)
    assert (cfg.inbound_partitions, cfg.redis_wait_replicas) == (8, 1)
    cfg = _load(
        {
            **stack_config,
            "chat:redisClusterMode": "true",
            "chat:redisShards": "5",
            "chat:redisReplicas": "0",
            "chat:redisNodeType": "cache.r7g.large",
            "chat:inboundPartitions": "32",
        }
    )
    assert (cfg.redis_cluster_mode, cfg.redis_shards, cfg.redis_replicas) == (True, 5, 0)
    assert (cfg.redis_node_type, cfg.inbound_partitions) == ("cache.r7g.large", 32)
    assert cfg.redis_wait_replicas == 0


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("redisShards", "0", "`pulumi config set chat:redisShards 3`"),
        ("redisReplicas", "-1", "`pulumi config set chat:redisReplicas 1`"),
        ("redisReplicas", "6", "`pulumi config set chat:redisReplicas 1`"),
        ("inboundPartitions", "0", "`pulumi config set chat:inboundPartitions 8`"),
    ],
)
def test_bad_redis_sizes_name_the_key_and_the_fix(
    stack_config: dict[str, str], key: str, value: str, fix: str
) -> None:
    with pytest.raises(ValueError, match=f"chat:{key} must be") as caught:
        _load({**stack_config, "chat:redisClusterMode": "true", f"chat:{key}": value})
    assert f"not {value}" in str(caught.value) and fix in str(caught.value)


def test_the_example_stack_config_is_accepted(stack_config: dict[str, str]) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())["config"]
    for key in ("redisClusterMode", "redisShards", "redisReplicas", "inboundPartitions"):
        assert f"chat:{key}" in example, f"Pulumi.dev.yaml.example lacks chat:{key}"
    plain = {k: str(v) for k, v in example.items() if not isinstance(v, dict)}
    cfg = _load({**stack_config, **plain})
    assert cfg.redis_cluster_mode is False
