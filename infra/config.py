"""Stack configuration: sizes, counts and secrets, read once from ``Pulumi.<stack>.yaml``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pulumi

REPO = Path(__file__).resolve().parent.parent
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<repo>[^:@]+)"
)


@dataclass(frozen=True, slots=True)
class StackConfig:
    """Everything a stack is configured with; secrets stay ``Output`` so they stay secret."""

    name: str
    image: str
    jwt_secret: pulumi.Output[str]
    redis_auth_token: pulumi.Output[str]
    vpc_cidr: str = "10.40.0.0/16"
    az_count: int = 2
    nat_gateways: int = 1
    redis_node_type: str = "cache.t4g.small"
    # Replicas of each primary: of the one primary, or of each shard in cluster mode.
    redis_replicas: int = 1
    # Off: one primary with its replicas. On: ElastiCache cluster mode, redis_shards primaries.
    redis_cluster_mode: bool = False
    redis_shards: int = 3
    # The inbound stream's partitions (hash-tagged streams): fixed for the stack's life.
    inbound_partitions: int = 8
    redis_engine_version: str = "7.1"
    kafka_version: str = "3.7.x"
    kafka_instance_type: str = "kafka.t3.small"
    kafka_brokers: int = 2
    kafka_volume_gb: int = 100
    kafka_pollers: int = 1
    db_instance_class: str = "db.t4g.medium"
    db_engine_version: str = "15"
    db_storage_gb: int = 50
    db_max_storage_gb: int = 200
    db_multi_az: bool = False
    db_deletion_protection: bool = True
    # Set by `make destroy` to a name no earlier teardown used.
    db_final_snapshot: str | None = None
    gateway_cpu: int = 512
    gateway_memory_mb: int = 1024
    gateway_min: int = 2
    gateway_max: int = 10
    gateway_cpu_target: int = 60
    bridge_tasks: int = 2
    alb_idle_timeout_s: int = 3600
    certificate_arn: str | None = None
    lambda_architecture: str = "arm64"
    lambda_runtime: str = "python3.12"
    log_retention_days: int = 30
    # Alarms notify this SNS topic's subscribers; an address subscribes by email.
    alarm_email: str | None = None
    artifacts_dir: Path = REPO / "build"

    def __post_init__(self) -> None:
        if self.image and ":" not in self.image.rpartition("/")[2] and "@" not in self.image:
            raise ValueError(
                "chat:image needs a tag or digest (the deploy that pushed it sets one); "
                "a bare repository would roll out whatever 'latest' is"
            )
        if not 2 <= self.az_count <= 4:
            raise ValueError("azCount must be 2..4 (RDS and the ALB need two zones)")
        if not 1 <= self.nat_gateways <= self.az_count:
            raise ValueError("natGateways must be 1..azCount")
        if self.kafka_brokers % self.az_count:
            raise ValueError("kafkaBrokers must be a multiple of azCount (MSK spreads them evenly)")
        if self.gateway_min < 1 or self.gateway_max < self.gateway_min:
            raise ValueError("need 1 <= gatewayMin <= gatewayMax")
        # Socket.IO pings every 25 s; an idle timeout under a few minutes cuts quiet sockets.
        if not 300 <= self.alb_idle_timeout_s <= 4000:
            raise ValueError("albIdleTimeout must be 300..4000 seconds for WebSockets")
        if self.lambda_architecture not in {"arm64", "x86_64"}:
            raise ValueError("lambdaArchitecture must be arm64 or x86_64")
        # ElastiCache allows 0..5 replicas per primary; shards only count in cluster mode.
        if not 0 <= self.redis_replicas <= 5:
            raise ValueError(
                f"chat:redisReplicas must be 0..5 (replicas of each primary), not "
                f"{self.redis_replicas}: `pulumi config set chat:redisReplicas 1`"
            )
        if self.redis_shards < 1:
            raise ValueError(
                f"chat:redisShards must be >= 1 (the cluster's primaries), not "
                f"{self.redis_shards}: `pulumi config set chat:redisShards 3`"
            )
        if self.inbound_partitions < 1:
            raise ValueError(
                f"chat:inboundPartitions must be >= 1 (the inbound stream's partitions), not "
                f"{self.inbound_partitions}: `pulumi config set chat:inboundPartitions 8`"
            )

    @property
    def redis_wait_replicas(self) -> int:
        """How many replicas must hold an accepted send before it is acked: one, when any."""
        return min(1, self.redis_replicas)

    @property
    def ecr_repository_arn(self) -> str | None:
        """The ECR repository the image lives in, when it lives in ECR."""
        found = _ECR_IMAGE.match(self.image)
        if not found:
            return None
        return f"arn:aws:ecr:{found['region']}:{found['account']}:repository/{found['repo']}"


def load(config: pulumi.Config | None = None) -> StackConfig:
    """Read the ``chat:*`` configuration of the current stack."""
    c = config or pulumi.Config()

    def integer(key: str, default: int) -> int:
        value = c.get_int(key)
        return default if value is None else value

    defaults = StackConfig(
        name="",
        image="",
        jwt_secret=pulumi.Output.secret(""),
        redis_auth_token=pulumi.Output.secret(""),
    )
    db_multi_az = c.get_bool("dbMultiAz")
    cluster_mode = c.get_bool("redisClusterMode")
    protection = c.get_bool("dbDeletionProtection")
    return StackConfig(
        name=f"chat-{pulumi.get_stack()}",
        image=_required(c, "image", "the image `make deploy IMAGE=...` or CI pushed"),
        jwt_secret=_required_secret(c, "jwtSecret"),
        redis_auth_token=_required_secret(c, "redisAuthToken"),
        vpc_cidr=c.get("vpcCidr") or defaults.vpc_cidr,
        az_count=integer("azCount", defaults.az_count),
        nat_gateways=integer("natGateways", defaults.nat_gateways),
        redis_node_type=c.get("redisNodeType") or defaults.redis_node_type,
        redis_replicas=integer("redisReplicas", defaults.redis_replicas),
        redis_cluster_mode=defaults.redis_cluster_mode if cluster_mode is None else cluster_mode,
        redis_shards=integer("redisShards", defaults.redis_shards),
        inbound_partitions=integer("inboundPartitions", defaults.inbound_partitions),
        redis_engine_version=c.get("redisEngineVersion") or defaults.redis_engine_version,
        kafka_version=c.get("kafkaVersion") or defaults.kafka_version,
        kafka_instance_type=c.get("kafkaInstanceType") or defaults.kafka_instance_type,
        kafka_brokers=integer("kafkaBrokers", defaults.kafka_brokers),
        kafka_volume_gb=integer("kafkaVolumeGb", defaults.kafka_volume_gb),
        kafka_pollers=integer("kafkaPollers", defaults.kafka_pollers),
        db_instance_class=c.get("dbInstanceClass") or defaults.db_instance_class,
        db_engine_version=c.get("dbEngineVersion") or defaults.db_engine_version,
        db_storage_gb=integer("dbStorageGb", defaults.db_storage_gb),
        db_max_storage_gb=integer("dbMaxStorageGb", defaults.db_max_storage_gb),
        db_multi_az=defaults.db_multi_az if db_multi_az is None else db_multi_az,
        db_deletion_protection=defaults.db_deletion_protection
        if protection is None
        else protection,
        gateway_cpu=integer("gatewayCpu", defaults.gateway_cpu),
        gateway_memory_mb=integer("gatewayMemoryMb", defaults.gateway_memory_mb),
        gateway_min=integer("gatewayMin", defaults.gateway_min),
        gateway_max=integer("gatewayMax", defaults.gateway_max),
        gateway_cpu_target=integer("gatewayCpuTarget", defaults.gateway_cpu_target),
        bridge_tasks=integer("bridgeTasks", defaults.bridge_tasks),
        alb_idle_timeout_s=integer("albIdleTimeout", defaults.alb_idle_timeout_s),
        certificate_arn=c.get("certificateArn"),
        lambda_architecture=c.get("lambdaArchitecture") or defaults.lambda_architecture,
        log_retention_days=integer("logRetentionDays", defaults.log_retention_days),
        db_final_snapshot=c.get("dbFinalSnapshot"),
        alarm_email=c.get("alarmEmail"),
        artifacts_dir=Path(c.get("artifactsDir") or defaults.artifacts_dir),
    )


def _required(c: pulumi.Config, key: str, what: str) -> str:
    value = c.get(key)
    if not value:
        raise pulumi.RunError(
            f"stack config chat:{key} is not set ({what}): "
            f"`pulumi config set chat:{key} ...`, see docs/deploy.md"
        )
    return value


def _required_secret(c: pulumi.Config, key: str) -> pulumi.Output[str]:
    if c.get_secret(key) is None:
        raise pulumi.RunError(
            f"stack config chat:{key} is not set: "
            f'`pulumi config set --secret chat:{key} "$(openssl rand -hex 32)"`, see docs/deploy.md'
        )
    return c.require_secret(key)
