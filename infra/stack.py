"""The whole deployment, wired from the stack configuration and the function registry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from functions.registry import FUNCTIONS, Function
from infra.config import StackConfig
from infra.data import Cache, CacheArgs, Database, DatabaseArgs, Kafka, KafkaArgs, SecretValue
from infra.gateway import Gateway, GatewayArgs
from infra.lambdas import BridgeArgs, Functions, FunctionsArgs, LambdaArgs, SecretRef, VpcLambda
from infra.network import Network, NetworkArgs

PROVISION_HANDLER = "functions.aws.provision.handler"


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the program exports."""

    websocket_url: pulumi.Output[str]
    entry_url: pulumi.Output[str]
    history_url: pulumi.Output[str]
    functions: dict[str, pulumi.Output[str]]


def build(cfg: StackConfig, functions: Sequence[Function] = FUNCTIONS) -> Deployment:
    """Declare every resource of a stack."""
    name = cfg.name
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
        ),
    )
    jwt = SecretValue(f"{name}-jwt", cfg.jwt_secret, "HS256 secret of client tokens")
    redis_url = SecretValue(f"{name}-redis-url", cache.url, "Redis URL with its auth token")
    cluster = aws.ecs.Cluster(name, settings=[{"name": "containerInsights", "value": "enabled"}])

    environment: dict[str, pulumi.Input[str]] = {
        "CHAT_ENVIRONMENT": "prod",
        "CHAT_DEV_AUTH": "false",
        "CHAT_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "CHAT_KAFKA_SECURITY_PROTOCOL": "SSL",
        "CHAT_POSTGRES_DSN": database.dsn,
    }
    runtime_secrets = {
        "CHAT_REDIS_URL": SecretRef(redis_url.arn),
        "PGPASSWORD": SecretRef(database.secret_arn, "password"),
    }
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
            http_secrets={"CHAT_JWT_SECRET": SecretRef(jwt.arn)},
            kafka_cluster_arn=kafka.cluster.arn,
            kafka_pollers=cfg.kafka_pollers,
            bridge=BridgeArgs(
                cluster_arn=cluster.arn,
                image=cfg.image,
                ecr_repository_arn=cfg.ecr_repository_arn,
                tasks=cfg.bridge_tasks,
                environment={"CHAT_ENVIRONMENT": "prod", "CHAT_DEV_AUTH": "false"},
                redis_url_secret_arn=redis_url.arn,
                log_retention_days=cfg.log_retention_days,
                network=network,
            ),
        ),
    )
    provision(cfg, network, environment, runtime_secrets)
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
                "CHAT_ENVIRONMENT": "prod",
                "CHAT_DEV_AUTH": "false",
                "CHAT_HISTORY_URL": deployed.history_url,
            },
            secrets={"CHAT_REDIS_URL": redis_url.arn, "CHAT_JWT_SECRET": jwt.arn},
            log_retention_days=cfg.log_retention_days,
        ),
    )
    return Deployment(
        websocket_url=gateway.websocket_url,
        entry_url=gateway.entry_url,
        history_url=deployed.history_url,
        functions={n: lam.function.name for n, lam in deployed.lambdas.items()},
    )


def provision(
    cfg: StackConfig,
    network: Network,
    environment: dict[str, pulumi.Input[str]],
    secrets: dict[str, SecretRef],
) -> None:
    """Migrate and create topics from inside the VPC on every deploy that changes the code."""
    archive = cfg.artifacts_dir / "provision.zip"
    lam = VpcLambda(
        f"{cfg.name}-provision",
        LambdaArgs(
            archive=archive,
            handler=PROVISION_HANDLER,
            timeout_s=300,
            memory_mb=256,
            architecture=cfg.lambda_architecture,
            runtime=cfg.lambda_runtime,
            log_retention_days=cfg.log_retention_days,
            network=network,
            environment=environment,
            secrets=secrets,
            description="Migrations and Kafka topics",
        ),
    )
    # Runs again whenever the archive (so a migration) changes.
    digest = hashlib.sha256(archive.read_bytes()).hexdigest() if archive.exists() else "absent"
    aws.lambda_.Invocation(
        f"{cfg.name}-provision",
        function_name=lam.function.name,
        input=json.dumps({"reason": "deploy"}),
        triggers={"archive": digest},
    )
