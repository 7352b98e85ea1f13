"""The data tier: ElastiCache Redis, MSK and RDS PostgreSQL, none reachable from the internet."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.network import POSTGRES_PORT, REDIS_PORT


@dataclass(frozen=True, slots=True)
class CacheArgs:
    """Redis replication group size, placement, mode and auth token."""

    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    node_type: str
    replicas: int
    engine_version: str
    auth_token: pulumi.Output[str]
    # Cluster mode: ``shards`` primaries (node groups), each with ``replicas`` replicas.
    cluster_mode: bool = False
    shards: int = 1


class Cache(pulumi.ComponentResource):
    """Redis with primaries and replicas, encrypted in transit and at rest, behind a token.

    Without cluster mode, one primary; with it, a Redis Cluster of ``shards`` primaries that
    clients reach through its configuration endpoint.
    """

    def __init__(
        self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:Cache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        subnets = aws.elasticache.SubnetGroup(name, subnet_ids=list(args.subnet_ids), opts=child)
        cluster = args.cluster_mode
        # A group's cluster mode is fixed at its creation: turning it on declares a replication
        # group (and parameter group) of another name, never an edit of the running one.
        group = f"{name}-cluster" if cluster else name
        # Dedup records, seq counters and recent logs carry guarantees: ElastiCache's default
        # policy (volatile-lru) may evict keys with a TTL, such as a dedup record, which would
        # let a retried send become a second message. A full cache refuses writes instead.
        parameters = [
            aws.elasticache.ParameterGroupParameterArgs(name="maxmemory-policy", value="noeviction")
        ]
        if cluster:
            parameters.append(
                aws.elasticache.ParameterGroupParameterArgs(name="cluster-enabled", value="yes")
            )
        params = aws.elasticache.ParameterGroup(
            group,
            family=f"redis{args.engine_version.split('.')[0]}",
            parameters=parameters,
            opts=child,
        )
        failover = args.replicas > 0
        self.group = aws.elasticache.ReplicationGroup(
            group,
            description=f"{group}: streams, recent logs, fan-out",
            engine="redis",
            engine_version=args.engine_version,
            node_type=args.node_type,
            # One primary and its replicas, or shards (node groups) of a primary and replicas.
            num_cache_clusters=None if cluster else 1 + args.replicas,
            cluster_mode="enabled" if cluster else None,
            num_node_groups=args.shards if cluster else None,
            replicas_per_node_group=args.replicas if cluster else None,
            # Cluster mode requires automatic failover; Multi-AZ needs a replica to fail over to.
            automatic_failover_enabled=failover or cluster,
            multi_az_enabled=failover,
            port=REDIS_PORT,
            subnet_group_name=subnets.name,
            security_group_ids=[args.security_group_id],
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            auth_token=args.auth_token,
            snapshot_retention_limit=3,
            parameter_group_name=params.name,
            opts=child,
        )
        # In cluster mode, the configuration endpoint: any node, from which clients learn all.
        self.endpoint: pulumi.Output[str] = (
            self.group.configuration_endpoint_address
            if cluster
            else self.group.primary_endpoint_address
        )
        # The URL carries the token, so it is a secret and only ever travels as one.
        self.url: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.auth_token, self.endpoint).apply(
                lambda v: f"rediss://:{urllib.parse.quote(v[0], safe='')}@{v[1]}:{REDIS_PORT}/0"
            )
        )
        kind = "configuration_endpoint" if cluster else "primary_endpoint"
        self.register_outputs({kind: self.endpoint})


@dataclass(frozen=True, slots=True)
class KafkaArgs:
    """MSK brokers, version and placement."""

    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    kafka_version: str
    instance_type: str
    brokers: int
    volume_gb: int
    log_retention_days: int


class Kafka(pulumi.ComponentResource):
    """An MSK cluster: topics are created by provisioning, never by a client's typo."""

    def __init__(
        self, name: str, args: KafkaArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:Kafka", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        replication = min(3, args.brokers)
        settings = aws.msk.Configuration(
            name,
            kafka_versions=[args.kafka_version],
            server_properties="\n".join(
                [
                    "auto.create.topics.enable=false",
                    f"default.replication.factor={replication}",
                    f"min.insync.replicas={max(1, replication - 1)}",
                    "unclean.leader.election.enable=false",
                ]
            ),
            opts=child,
        )
        logs = aws.cloudwatch.LogGroup(
            f"{name}-brokers", retention_in_days=args.log_retention_days, opts=child
        )
        self.cluster = aws.msk.Cluster(
            name,
            kafka_version=args.kafka_version,
            number_of_broker_nodes=args.brokers,
            broker_node_group_info={
                "instance_type": args.instance_type,
                "client_subnets": list(args.subnet_ids),
                "security_groups": [args.security_group_id],
                "storage_info": {"ebs_storage_info": {"volume_size": args.volume_gb}},
            },
            configuration_info={"arn": settings.arn, "revision": settings.latest_revision},
            # TLS everywhere: clients use the TLS listener (CHAT_KAFKA_SECURITY_PROTOCOL=SSL).
            encryption_info={"encryption_in_transit": {"client_broker": "TLS", "in_cluster": True}},
            client_authentication={"unauthenticated": True},
            logging_info={
                "broker_logs": {"cloudwatch_logs": {"enabled": True, "log_group": logs.name}}
            },
            opts=child,
        )
        self.bootstrap: pulumi.Output[str] = self.cluster.bootstrap_brokers_tls
        self.register_outputs({"arn": self.cluster.arn, "bootstrap": self.bootstrap})


@dataclass(frozen=True, slots=True)
class DatabaseArgs:
    """PostgreSQL instance size, placement and protection."""

    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    instance_class: str
    engine_version: str
    storage_gb: int
    max_storage_gb: int
    multi_az: bool
    deletion_protection: bool
    final_snapshot: str | None = None


DB_NAME = "chat"
# The master user: migrations and provisioning only. Everything else logs in as APP_USER.
DB_USER = "chat"
APP_USER = "chat_app"


class Database(pulumi.ComponentResource):
    """RDS PostgreSQL, private, encrypted; RDS keeps and rotates the master password.

    The application role's credentials live in a secret of their own, filled by provisioning.
    """

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        subnets = aws.rds.SubnetGroup(name, subnet_ids=list(args.subnet_ids), opts=child)
        self.instance = aws.rds.Instance(
            name,
            engine="postgres",
            engine_version=args.engine_version,
            instance_class=args.instance_class,
            allocated_storage=args.storage_gb,
            max_allocated_storage=args.max_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            db_name=DB_NAME,
            username=DB_USER,
            manage_master_user_password=True,
            port=POSTGRES_PORT,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[args.security_group_id],
            publicly_accessible=False,
            multi_az=args.multi_az,
            backup_retention_period=7,
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=False,
            # A second teardown must not collide with the first one's snapshot.
            final_snapshot_identifier=args.final_snapshot or f"{name}-final",
            copy_tags_to_snapshot=True,
            enabled_cloudwatch_logs_exports=["postgresql"],
            opts=child,
        )
        self.secret_arn: pulumi.Output[str] = self.instance.master_user_secrets.apply(
            lambda secrets: (secrets[0].secret_arn or "") if secrets else ""
        )
        # Provisioning puts the first value (and every rotated one) in; no password in the state.
        self.app_secret = aws.secretsmanager.Secret(
            f"{name}-app",
            description=f"{name}: PostgreSQL login of the application role {APP_USER}",
            recovery_window_in_days=7,
            opts=child,
        )
        # No password in a DSN: processes read it from a secret into PGPASSWORD.
        self.dsn = self._dsn(DB_USER)
        self.app_dsn = self._dsn(APP_USER)
        self.register_outputs(
            {
                "address": self.instance.address,
                "secret_arn": self.secret_arn,
                "app_secret_arn": self.app_secret.arn,
            }
        )

    def _dsn(self, user: str) -> pulumi.Output[str]:
        return pulumi.Output.concat(
            f"postgresql://{user}@",
            self.instance.address,
            f":{POSTGRES_PORT}/{DB_NAME}?sslmode=require",
        )


class SecretValue(pulumi.ComponentResource):
    """One Secrets Manager secret holding one value."""

    def __init__(
        self,
        name: str,
        value: pulumi.Output[str],
        description: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("chat:infra:SecretValue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.secret = aws.secretsmanager.Secret(
            name, description=description, recovery_window_in_days=7, opts=child
        )
        aws.secretsmanager.SecretVersion(
            name, secret_id=self.secret.id, secret_string=value, opts=child
        )
        self.arn: pulumi.Output[str] = self.secret.arn
        self.register_outputs({"arn": self.arn})
