"""The Pulumi program under mocks: what it declares for the registry, and how safely."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi_mocks import DEPLOYED_FUNCTIONS, IMAGE, JWT, TOKEN, Deployed, RecordingMocks

from functions.registry import Function
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule

pytestmark = [
    pytest.mark.timeout(60),
    # pulumi_aws warns on import about its own deprecated resource modules.
    pytest.mark.filterwarnings(r"ignore:.*deprecated:DeprecationWarning:pulumi_aws\..*"),
]


def _lambda_name(fn: Function) -> str:
    return f"chat-test-{fn.name}"


def _policies(deployed: Deployed) -> dict[str, dict[str, Any]]:
    return {
        r.name: json.loads(r.inputs["policy"])
        for r in deployed.of_type("aws:iam/rolePolicy:RolePolicy")
    }


def test_one_lambda_per_registry_function(deployed: Deployed) -> None:
    names = sorted(r.name for r in deployed.of_type("aws:lambda/function:Function"))
    assert names == sorted(
        [
            *(_lambda_name(fn) for fn in DEPLOYED_FUNCTIONS),
            "chat-test-provision",
            "chat-test-gauges",
        ]
    )
    for fn in DEPLOYED_FUNCTIONS:
        lam = deployed.named("aws:lambda/function:Function", _lambda_name(fn))
        assert lam.inputs["handler"] == "functions.aws.lambda_handler.handler"
        assert lam.inputs["environment"]["variables"]["CHAT_FUNCTION"] == fn.name
        assert lam.inputs["memorySize"] == fn.memory_mb
        assert lam.inputs["vpcConfig"]["subnetIds"], "functions run inside the VPC"


def test_each_function_has_exactly_its_trigger(deployed: Deployed) -> None:
    mappings = deployed.of_type("aws:lambda/eventSourceMapping:EventSourceMapping")
    routes = deployed.of_type("aws:apigatewayv2/route:Route")
    rules = deployed.of_type("aws:cloudwatch/eventRule:EventRule")
    bridges = deployed.of_type("aws:ecs/service:Service")
    for fn in DEPLOYED_FUNCTIONS:
        name = _lambda_name(fn)
        trigger = fn.trigger
        match trigger:
            case KafkaTopic():
                (mapping,) = [m for m in mappings if m.name == name]
                assert mapping.inputs["topics"] == [trigger.topic]
                assert mapping.inputs["amazonManagedKafkaEventSourceConfig"] == {
                    "consumerGroupId": trigger.group
                }
                assert mapping.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]
                assert mapping.inputs["maximumRetryAttempts"] == trigger.max_attempts - 1
            case HttpRoute():
                keys = {r.inputs["routeKey"] for r in routes if r.name.startswith(f"{fn.name}-")}
                assert {f"{m} {p}" for m, p in trigger.parsed()} <= keys
            case Schedule():
                (rule,) = [r for r in rules if r.name == name]
                minutes = math.ceil(trigger.every_s / 60)
                unit = "minutes" if minutes > 1 else "minute"
                assert rule.inputs["scheduleExpression"] == f"rate({minutes} {unit})"
                deployed.named("aws:cloudwatch/eventTarget:EventTarget", name)
            case RedisStream():
                (service,) = [s for s in bridges if s.name == f"{name}-bridge"]
                task = deployed.named("aws:ecs/taskDefinition:TaskDefinition", f"{name}-bridge")
                (container,) = json.loads(task.inputs["containerDefinitions"])
                assert container["command"][-2:] == ["--function", fn.name]
                env = {e["name"]: e["value"] for e in container["environment"]}
                assert env["CHAT_BRIDGE_LAMBDA"] == name
                assert service.inputs["desiredCount"] >= 1
    kafka = [fn for fn in DEPLOYED_FUNCTIONS if isinstance(fn.trigger, KafkaTopic)]
    assert len(mappings) == len(kafka)
    # Plus the gauges' minute tick.
    assert len(rules) == 1 + sum(isinstance(fn.trigger, Schedule) for fn in DEPLOYED_FUNCTIONS)


def test_data_stores_are_unreachable_from_the_internet(deployed: Deployed) -> None:
    db = deployed.named("aws:rds/instance:Instance", "chat-test-db")
    assert db.inputs["publiclyAccessible"] is False
    assert db.inputs["storageEncrypted"] is True
    assert db.inputs["manageMasterUserPassword"] is True
    assert "password" not in db.inputs
    redis = deployed.named("aws:elasticache/replicationGroup:ReplicationGroup", "chat-test-redis")
    assert redis.inputs["transitEncryptionEnabled"] is True
    assert redis.inputs["atRestEncryptionEnabled"] is True
    (msk,) = deployed.of_type("aws:msk/cluster:Cluster")
    assert msk.inputs["encryptionInfo"]["encryptionInTransit"]["clientBroker"] == "TLS"
    for group in ("redis", "kafka", "database", "gateway", "functions", "bridge"):
        sg = deployed.named("aws:ec2/securityGroup:SecurityGroup", f"chat-test-{group}")
        for rule in sg.inputs.get("ingress", []):
            assert "0.0.0.0/0" not in rule.get("cidrBlocks", []), f"{group} open to the internet"
    data_subnets = [s for s in deployed.of_type("aws:ec2/subnet:Subnet") if "-data-" in s.name]
    assert data_subnets and not any(s.inputs.get("mapPublicIpOnLaunch") for s in data_subnets)
    data_routes = deployed.named("aws:ec2/routeTable:RouteTable", "chat-test-data")
    assert not data_routes.inputs.get("routes"), "the data tier has no route out"


def test_redis_never_evicts_the_keys_that_carry_guarantees(deployed: Deployed) -> None:
    params = deployed.named("aws:elasticache/parameterGroup:ParameterGroup", "chat-test-redis")
    assert params.inputs["family"] == "redis7"
    policy = {p["name"]: p["value"] for p in params.inputs["parameters"]}
    assert policy == {"maxmemory-policy": "noeviction"}
    redis = deployed.named("aws:elasticache/replicationGroup:ReplicationGroup", "chat-test-redis")
    assert redis.inputs["parameterGroupName"] == params.inputs.get("name", "chat-test-redis")


@pytest.mark.parametrize("shape", ["deployed", "clustered"])
def test_no_secret_in_plain_inputs(request: pytest.FixtureRequest, shape: str) -> None:
    stack: Deployed = request.getfixturevalue(shape)
    group = "chat-test-redis-cluster" if shape == "clustered" else "chat-test-redis"
    allowed = {
        ("aws:secretsmanager/secretVersion:SecretVersion", "chat-test-jwt"),
        ("aws:secretsmanager/secretVersion:SecretVersion", "chat-test-redis-url"),
        ("aws:elasticache/replicationGroup:ReplicationGroup", group),
    }
    for r in stack.mocks.resources:
        text = json.dumps(r.inputs, default=str)
        if (r.type, r.name) not in allowed:
            assert JWT not in text and TOKEN not in text, f"secret in {r.type} {r.name}"


def test_example_stack_config_keeps_secrets_secure() -> None:
    import yaml

    example = Path(__file__).resolve().parents[2] / "Pulumi.dev.yaml.example"
    config = yaml.safe_load(example.read_text())["config"]
    for key in ("chat:jwtSecret", "chat:redisAuthToken"):
        assert set(config[key]) == {"secure"}, f"{key} must be a secure value"
    assert "chat:image" in config


def test_alb_keeps_websockets_open(deployed: Deployed) -> None:
    (alb,) = deployed.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert alb.inputs["idleTimeout"] >= 3600
    (tg,) = deployed.of_type("aws:lb/targetGroup:TargetGroup")
    assert tg.inputs["healthCheck"]["path"] == "/healthz"
    assert tg.inputs["stickiness"]["enabled"] is True
    assert deployed.of_type("aws:appautoscaling/policy:Policy")


def test_every_log_group_has_a_retention(deployed: Deployed) -> None:
    groups = deployed.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert groups and all(g.inputs.get("retentionInDays") for g in groups)


def test_each_policy_is_limited_to_its_resources(deployed: Deployed) -> None:
    from infra.policies import WILDCARD_ONLY_ACTIONS

    policies = _policies(deployed)
    for name, policy in policies.items():
        for statement in policy["Statement"]:
            if "*" in statement["Resource"]:
                assert set(statement["Action"]) <= WILDCARD_ONLY_ACTIONS, (name, statement)
            assert not any(a.endswith(":*") or a == "*" for a in statement["Action"]), name

    def actions(name: str) -> set[str]:
        return {a for s in policies[name]["Statement"] for a in s["Action"]}

    for fn in DEPLOYED_FUNCTIONS:
        name = _lambda_name(fn)
        assert "lambda:InvokeFunction" not in actions(name)
        jwt = any("jwt" in r for s in policies[name]["Statement"] for r in s["Resource"])
        assert jwt == isinstance(fn.trigger, HttpRoute), f"{name}: JWT secret only for HTTP"
        kafka = "kafka:GetBootstrapBrokers" in actions(name)
        assert kafka == isinstance(fn.trigger, KafkaTopic), f"{name}: Kafka only for its trigger"
        if isinstance(fn.trigger, RedisStream):
            bridge = policies[f"{name}-bridge"]["Statement"]
            assert bridge == [
                {
                    "Effect": "Allow",
                    "Action": ["lambda:InvokeFunction"],
                    "Resource": [f"arn:aws:lambda:eu-west-1:123456789012:{name}"],
                }
            ]


def test_outputs_exist(deployed: Deployed) -> None:
    assert deployed.outputs["websocket_url"].startswith("ws")
    assert deployed.outputs["websocket_url"].endswith("/socket.io/")
    assert deployed.outputs["history_url"].startswith("https://")
    assert set(deployed.outputs["functions"]) == {fn.name for fn in DEPLOYED_FUNCTIONS}
    assert deployed.outputs["image"] == IMAGE
    assert deployed.outputs["alarm_topic"].startswith("arn:aws:sns:")


SERVICE = "aws:ecs/service:Service"
INVOCATION = ("aws:lambda/invocation:Invocation", "chat-test-provision")


def test_gateways_start_after_the_listener_and_provisioning(deployed: Deployed) -> None:
    gateway = (SERVICE, "chat-test-gateway")
    (listener,) = deployed.of_type("aws:lb/listener:Listener")
    assert deployed.mocks.waits_for(gateway, (listener.type, listener.name))
    assert deployed.mocks.waits_for(gateway, INVOCATION)


def test_consumers_start_after_provisioning(deployed: Deployed) -> None:
    mocks = deployed.mocks
    consumers = [
        (r.type, r.name)
        for r in deployed.mocks.resources
        if r.type
        in {
            "aws:lambda/eventSourceMapping:EventSourceMapping",
            "aws:cloudwatch/eventTarget:EventTarget",
            "aws:apigatewayv2/route:Route",
        }
        and r.name != "chat-test-gauges"
    ]
    consumers += [(SERVICE, s.name) for s in deployed.of_type(SERVICE) if "-bridge" in s.name]
    kinds = {kind for kind, _ in consumers}
    assert len(kinds) == 4, kinds
    for consumer in consumers:
        assert mocks.waits_for(consumer, INVOCATION), consumer
    # Provisioning itself must not wait for what waits for it.
    assert not mocks.waits_for(INVOCATION, (SERVICE, "chat-test-gateway"))


def test_functions_log_in_as_the_application_role(deployed: Deployed) -> None:
    from infra.data import APP_USER, DB_USER

    provision = deployed.named("aws:lambda/function:Function", "chat-test-provision")
    env = provision.inputs["environment"]["variables"]
    assert env["CHAT_POSTGRES_DSN"].startswith(f"postgresql://{DB_USER}@")
    assert env["APP_DB_USER"] == APP_USER
    app_secret = env["APP_DB_SECRET_ARN"]
    assert "rds!" in json.loads(env["CHAT_AWS_SECRETS"])["PGPASSWORD"]
    assert app_secret in json.dumps(_policies(deployed)["chat-test-provision"])
    for fn in DEPLOYED_FUNCTIONS:
        lam = deployed.named("aws:lambda/function:Function", _lambda_name(fn))
        env = lam.inputs["environment"]["variables"]
        assert env["CHAT_POSTGRES_DSN"].startswith(f"postgresql://{APP_USER}@"), fn.name
        secrets = json.loads(env["CHAT_AWS_SECRETS"])
        assert secrets["PGPASSWORD"] == f"{app_secret}#password", fn.name
        assert "rds!" not in json.dumps(_policies(deployed)[_lambda_name(fn)]), fn.name


def test_every_process_on_aws_reads_its_environment_as_settings(deployed: Deployed) -> None:
    from chat.settings import Settings, env_name

    # What Secrets Manager fills in at start: long enough for a production JWT secret.
    secret = "s" * 32
    environments = {
        lam.name: dict(lam.inputs["environment"]["variables"])
        for lam in deployed.of_type("aws:lambda/function:Function")
    }
    for task in deployed.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        (container,) = json.loads(task.inputs["containerDefinitions"])
        environments[task.name] = {e["name"]: e["value"] for e in container["environment"]}
        environments[task.name].update({s["name"]: secret for s in container["secrets"]})
    assert {"chat-test-gateway", "chat-test-provision"} <= set(environments)
    for name, env in environments.items():
        named = json.loads(env.get(env_name("aws_secrets"), "{}"))
        settings = Settings.from_env({**env, **dict.fromkeys(named, secret)})
        assert settings.environment == "prod" and not settings.dev_auth, name
        assert settings.redis_url == secret, f"{name} has no Redis URL"


def test_alarms_watch_dead_letters_lag_errors_and_5xx(deployed: Deployed) -> None:
    from functions.aws.gauges import dead_letter_sources

    alarms = {
        (a.inputs["namespace"], a.inputs["metricName"], json.dumps(a.inputs["dimensions"]))
        for a in deployed.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    names = {a[1] for a in alarms}
    assert {"DeadLetters", "OffsetLag", "StreamLag", "Errors"} <= names
    assert {"HTTPCode_ELB_5XX_Count", "HTTPCode_Target_5XX_Count"} <= names
    dead = {json.loads(d)["Source"] for _, m, d in alarms if m == "DeadLetters"}
    assert dead == set(dead_letter_sources(DEPLOYED_FUNCTIONS)) and dead
    errors = {json.loads(d)["FunctionName"] for _, m, d in alarms if m == "Errors"}
    assert errors == {_lambda_name(fn) for fn in DEPLOYED_FUNCTIONS}
    lagging = {json.loads(d)["FunctionName"] for _, m, d in alarms if m == "OffsetLag"}
    assert lagging == {
        _lambda_name(f) for f in DEPLOYED_FUNCTIONS if isinstance(f.trigger, KafkaTopic)
    }
    topic = deployed.of_type("aws:sns/topic:Topic")
    assert len(topic) == 1
    for alarm in deployed.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        assert alarm.inputs["alarmActions"] == [
            f"arn:aws:sns:eu-west-1:123456789012:{topic[0].name}"
        ]
    # The gauges may put metrics in their own namespace only.
    (statement,) = [
        st
        for st in _policies(deployed)["chat-test-gauges"]["Statement"]
        if "cloudwatch:PutMetricData" in st["Action"]
    ]
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Chat/chat-test"}}


def test_an_image_without_a_tag_is_refused() -> None:
    from infra.config import StackConfig

    secret = pulumi.Output.secret("x")
    with pytest.raises(ValueError, match="tag or digest"):
        StackConfig(
            name="x",
            image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/chat",
            jwt_secret=secret,
            redis_auth_token=secret,
        )
    assert StackConfig(name="x", image=IMAGE, jwt_secret=secret, redis_auth_token=secret)


def _packaged(artifacts: Path, name: str, arch: str, python: str) -> None:
    import hashlib

    zipped = artifacts / f"{name}.zip"
    zipped.write_bytes(b"PK\x05\x06" + bytes(18))
    manifest = {
        name: {
            "arch": arch,
            "python": python,
            "sha256": hashlib.sha256(zipped.read_bytes()).hexdigest(),
        }
    }
    (artifacts / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("arch", "python", "complaint"),
    [
        ("x86_64", "3.12", "built for x86_64, not arm64"),
        ("arm64", "3.11", "built for Python 3.11, not 3.12"),
    ],
)
def test_archives_unlike_the_stack_fail_before_any_resource(
    tmp_path: Path, thread_loops: None, arch: str, python: str, complaint: str
) -> None:
    from infra.config import StackConfig
    from infra.lambdas import ArchiveMismatch
    from infra.stack import build

    _packaged(tmp_path, "persist", arch, python)
    mocks = RecordingMocks()
    # preview=True: the check fails a preview, not only an update.
    pulumi.runtime.set_mocks(mocks, project="chat", stack="arch", preview=True)
    cfg = StackConfig(
        name="chat-arch",
        image=IMAGE,
        jwt_secret=pulumi.Output.secret(JWT),
        redis_auth_token=pulumi.Output.secret(TOKEN),
        artifacts_dir=tmp_path,
    )
    with pytest.raises(ArchiveMismatch, match=complaint) as caught:
        build(cfg, DEPLOYED_FUNCTIONS)
    assert "--arch arm64 --python 3.12" in str(caught.value)
    assert mocks.resources == []


def test_a_matching_archive_passes_and_an_edited_one_does_not(tmp_path: Path) -> None:
    from infra.lambdas import ArchiveMismatch, check_archives

    _packaged(tmp_path, "persist", "arm64", "3.12")
    assert check_archives(tmp_path, ["persist", "history"], "arm64", "python3.12") == ["history"]
    (tmp_path / "persist.zip").write_bytes(b"changed")
    with pytest.raises(ArchiveMismatch, match="changed after it was packaged"):
        check_archives(tmp_path, ["persist"], "arm64", "python3.12")
