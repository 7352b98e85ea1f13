"""The whole deployment, wired from the stack configuration and the function registry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from chat.settings import env_name, env_values
from functions.aws.gauges import NAMESPACE_ENV, dead_letter_sources
from functions.aws.package import GAUGES, PROVISION, archives
from functions.aws.provision import APP_SECRET_ENV, APP_USER_ENV
from functions.registry import FUNCTIONS, Function
from functions.triggers import KafkaTopic, RedisStream
from infra import policies
from infra.alarms import Alarms, AlarmsArgs
from infra.bridge import BridgeArgs
from infra.config import StackConfig
from infra.data import (
    APP_USER,
    Cache,
    CacheArgs,
    Database,
    DatabaseArgs,
    Kafka,
    KafkaArgs,
    SecretValue,
)
from infra.gateway import Gateway, GatewayArgs
from infra.lambdas import (
    Functions,
    FunctionsArgs,
    LambdaArgs,
    SecretRef,
    VpcLambda,
    check_archives,
)
from infra.network import Network, NetworkArgs


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the program exports."""

    websocket_url: pulumi.Output[str]
    entry_url: pulumi.Output[str]
    history_url: pulumi.Output[str]
    functions: dict[str, pulumi.Output[str]]
    # Kept as an output: a preview or deploy without an image of its own starts from it.
    image: str
    alarm_topic: pulumi.Output[str]


def build(cfg: StackConfig, functions: Sequence[Function] = FUNCTIONS) -> Deployment:
    """Declare every resource of a stack."""
    name = cfg.name
    # Fails preview as well as up: an archive for another architecture or Python never ships.
    check_archives(
        cfg.artifacts_dir,
        [a.name for a in archives(functions)],
        cfg.lambda_architecture,
        cfg.lambda_runtime,
    )
    network = Network(name, NetworkArgs(cfg.vpc_cidr, cfg.az_count, cfg.nat_gateways))
    cache = Cache(
        f"{name}-redis",
        CacheArgs(
            subnet_ids=[s.id for s in network.data_subnets],
            security_group_id=network.redis_sg.id,
            node_type=cfg.redis_node_type,
            replicas=cfg.redis_replicas,
            engine_version=cfg.redis_engine_version,
            auth_token=cfg.redis_auth_token,
            cluster_mode=cfg.redis_cluster_mode,
            shards=cfg.redis_shards,
        ),
    )
    kafka = Kafka(
        f"{name}-kafka",
        KafkaArgs(
            subnet_ids=[s.id for s in network.data_subnets],
            security_group_id=network.kafka_sg.id,
            kafka_version=cfg.kafka_version,
            instance_type=cfg.kafka_instance_type,
            brokers=cfg.kafka_brokers,
            volume_gb=cfg.kafka_volume_gb,
            log_retention_days=cfg.log_retention_days,
        ),
    )
    database = Database(
        f"{name}-db",
        DatabaseArgs(
            subnet_ids=[s.id for s in network.data_subnets],
            security_group_id=network.database_sg.id,
            instance_class=cfg.db_instance_class,
            engine_version=cfg.db_engine_version,
            storage_gb=cfg.db_storage_gb,
            max_storage_gb=cfg.db_max_storage_gb,
            multi_az=cfg.db_multi_az,
            deletion_protection=cfg.db_deletion_protection,
            final_snapshot=cfg.db_final_snapshot,
        ),
    )
    jwt = SecretValue(f"{name}-jwt", cfg.jwt_secret, "HS256 secret of client tokens")
    redis_url = SecretValue(f"{name}-redis-url", cache.url, "Redis URL with its auth token")
    cluster = aws.ecs.Cluster(name, settings=[{"name": "containerInsights", "value": "enabled"}])

    # What every process (gateway, bridge, Lambda) runs with.
    common: dict[str, pulumi.Input[str]] = {
        **env_values(environment="prod", dev_auth=False),
        **redis_environment(cfg),
    }
    base_environment: dict[str, pulumi.Input[str]] = {
        **common,
        env_name("kafka_bootstrap"): kafka.bootstrap,
        **env_values(kafka_security_protocol="SSL"),
    }
    # Functions log in as the application role; only provisioning uses the master user.
    environment = {**base_environment, env_name("postgres_dsn"): database.app_dsn}
    runtime_secrets = {
        env_name("redis_url"): SecretRef(redis_url.arn),
        "PGPASSWORD": SecretRef(database.app_secret.arn, "password"),
    }
    provisioned = provision(
        cfg,
        network,
        {
            **base_environment,
            env_name("postgres_dsn"): database.dsn,
            APP_SECRET_ENV: database.app_secret.arn,
            APP_USER_ENV: APP_USER,
        },
        {
            env_name("redis_url"): SecretRef(redis_url.arn),
            "PGPASSWORD": SecretRef(database.secret_arn, "password"),
        },
        app_secret_arn=database.app_secret.arn,
    )
    deployed = Functions(
        f"{name}-functions",
        FunctionsArgs(
            functions=functions,
            name_prefix=name,
            network=network,
            artifacts_dir=cfg.artifacts_dir,
            architecture=cfg.lambda_architecture,
            runtime=cfg.lambda_runtime,
            log_retention_days=cfg.log_retention_days,
            environment=environment,
            secrets=runtime_secrets,
            http_secrets={env_name("jwt_secret"): SecretRef(jwt.arn)},
            kafka_cluster_arn=kafka.cluster.arn,
            kafka_pollers=cfg.kafka_pollers,
            bridge=BridgeArgs(
                cluster_arn=cluster.arn,
                image=cfg.image,
                ecr_repository_arn=cfg.ecr_repository_arn,
                tasks=cfg.bridge_tasks,
                environment=common,
                redis_url_secret_arn=redis_url.arn,
                log_retention_days=cfg.log_retention_days,
                network=network,
            ),
            after=[provisioned],
        ),
    )
    gateway = Gateway(
        f"{name}-gateway",
        GatewayArgs(
            network=network,
            cluster_arn=cluster.arn,
            cluster_name=cluster.name,
            image=cfg.image,
            ecr_repository_arn=cfg.ecr_repository_arn,
            cpu=cfg.gateway_cpu,
            memory_mb=cfg.gateway_memory_mb,
            min_tasks=cfg.gateway_min,
            max_tasks=cfg.gateway_max,
            cpu_target=cfg.gateway_cpu_target,
            idle_timeout_s=cfg.alb_idle_timeout_s,
            certificate_arn=cfg.certificate_arn,
            environment={
                **common,
                env_name("history_url"): deployed.history_url,
                # /metrics on a port of its own inside the task: the ALB forwards only the
                # public port, so the entry never answers it.
                **env_values(metrics_port=9100, metrics_host="0.0.0.0"),
            },
            secrets={env_name("redis_url"): redis_url.arn, env_name("jwt_secret"): jwt.arn},
            log_retention_days=cfg.log_retention_days,
            after=[provisioned],
        ),
    )
    namespace = f"Chat/{name}"
    gauges(
        cfg, network, base_environment, {env_name("redis_url"): SecretRef(redis_url.arn)}, namespace
    )
    alarms = Alarms(
        f"{name}-alarms",
        AlarmsArgs(
            lambdas={n: lam.function.name for n, lam in deployed.lambdas.items()},
            kafka_functions=[f.name for f in functions if isinstance(f.trigger, KafkaTopic)],
            stream_functions=[f.name for f in functions if isinstance(f.trigger, RedisStream)],
            dead_letters=dead_letter_sources(functions),
            gauges_namespace=namespace,
            load_balancer_suffix=gateway.alb.arn_suffix,
            email=cfg.alarm_email,
        ),
    )
    return Deployment(
        websocket_url=gateway.websocket_url,
        entry_url=gateway.entry_url,
        history_url=deployed.history_url,
        functions={n: lam.function.name for n, lam in deployed.lambdas.items()},
        image=cfg.image,
        alarm_topic=alarms.topic.arn,
    )


def redis_environment(cfg: StackConfig) -> dict[str, str]:
    """How processes use Redis: its mode, the inbound stream's partitions, the replica wait.

    With replicas, an accepted send is acked only once a replica holds it, so a failover of
    its primary never loses it.
    """
    return env_values(
        redis_mode="cluster" if cfg.redis_cluster_mode else "standalone",
        inbound_partitions=cfg.inbound_partitions,
        redis_wait_replicas=cfg.redis_wait_replicas,
    )


def _system_lambda(
    cfg: StackConfig,
    archive: str,
    network: Network,
    environment: Mapping[str, pulumi.Input[str]],
    secrets: Mapping[str, SecretRef],
    *,
    timeout_s: int,
    description: str,
    statements: Sequence[policies.Statement] = (),
) -> VpcLambda:
    return VpcLambda(
        f"{cfg.name}-{archive}",
        LambdaArgs(
            archive=cfg.artifacts_dir / f"{archive}.zip",
            handler=f"functions.aws.{archive}.handler",
            timeout_s=timeout_s,
            memory_mb=256,
            architecture=cfg.lambda_architecture,
            runtime=cfg.lambda_runtime,
            log_retention_days=cfg.log_retention_days,
            network=network,
            environment=environment,
            secrets=secrets,
            statements=statements,
            description=description,
        ),
    )


def provision(
    cfg: StackConfig,
    network: Network,
    environment: Mapping[str, pulumi.Input[str]],
    secrets: Mapping[str, SecretRef],
    *,
    app_secret_arn: pulumi.Input[str],
) -> aws.lambda_.Invocation:
    """Migrate, create the app role and the topics from inside the VPC, before any consumer."""
    lam = _system_lambda(
        cfg,
        PROVISION,
        network,
        environment,
        secrets,
        timeout_s=300,
        description="Migrations, the application role, Kafka topics",
        # It fills the application role's secret (and rotates it when asked).
        statements=[
            policies.allow(
                ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
                [app_secret_arn],
            )
        ],
    )
    # Runs again whenever the archive (so a migration) changes. A failed run fails the deploy
    # before any consumer or gateway starts.
    archive = cfg.artifacts_dir / f"{PROVISION}.zip"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest() if archive.exists() else "absent"
    return aws.lambda_.Invocation(
        f"{cfg.name}-provision",
        function_name=lam.function.name,
        input=json.dumps({"reason": "deploy"}),
        triggers={"archive": digest},
    )


def gauges(
    cfg: StackConfig,
    network: Network,
    environment: Mapping[str, pulumi.Input[str]],
    secrets: Mapping[str, SecretRef],
    namespace: str,
) -> VpcLambda:
    """Publish dead-letter depth and Redis stream lag every minute, for the alarms."""
    lam = _system_lambda(
        cfg,
        GAUGES,
        network,
        {**environment, NAMESPACE_ENV: namespace},
        secrets,
        timeout_s=60,
        description="Dead-letter depth and stream lag as CloudWatch metrics",
        statements=[
            {
                **policies.allow(policies.METRIC_ACTIONS, ["*"]),
                "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
            }
        ],
    )
    name = f"{cfg.name}-{GAUGES}"
    rule = aws.cloudwatch.EventRule(name, schedule_expression="rate(1 minute)")
    aws.cloudwatch.EventTarget(name, rule=rule.name, arn=lam.function.arn)
    aws.lambda_.Permission(
        name,
        action="lambda:InvokeFunction",
        function=lam.function.name,
        principal="events.amazonaws.com",
        source_arn=rule.arn,
    )
    return lam
