"""One Lambda per registry function, each with its own role, log group and trigger."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

import pulumi
import pulumi_aws as aws

from chat.settings import env_name
from functions.registry import Function
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule, describe
from infra import policies
from infra.bridge import BridgeArgs, StreamBridge
from infra.network import Network

HANDLER = "functions.aws.lambda_handler.handler"
# API Gateway gives up on an integration after 30 s, so an HTTP function must answer sooner.
HTTP_TIMEOUT_S = 30
# Room for connecting, dead-lettering and reporting after the handler's own timeout.
BATCH_MARGIN_S = 30


@dataclass(frozen=True, slots=True)
class SecretRef:
    """An environment variable filled from a secret (a JSON key of it, when ``key`` is set)."""

    arn: pulumi.Input[str]
    key: str | None = None

    def ref(self) -> pulumi.Output[str]:
        """The form ``CHAT_AWS_SECRETS`` names it in: ``ARN`` or ``ARN#key``."""
        return pulumi.Output.concat(self.arn, f"#{self.key}" if self.key else "")


@dataclass(frozen=True, slots=True)
class LambdaArgs:
    """What one VPC Lambda runs and may touch."""

    archive: Path
    handler: str
    timeout_s: int
    memory_mb: int
    architecture: str
    runtime: str
    log_retention_days: int
    network: Network
    environment: Mapping[str, pulumi.Input[str]]
    secrets: Mapping[str, SecretRef]
    statements: Sequence[policies.Statement] = ()
    description: str = ""


class VpcLambda(pulumi.ComponentResource):
    """A Lambda in the app subnets; its role reaches its log group, its secrets, nothing else."""

    def __init__(
        self, name: str, args: LambdaArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:Lambda", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.log_group = aws.cloudwatch.LogGroup(
            name,
            name=f"/aws/lambda/{name}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        self.role = aws.iam.Role(
            name, assume_role_policy=policies.assume_role("lambda.amazonaws.com"), opts=child
        )
        statements = [
            policies.logs(self.log_group.arn),
            policies.allow(policies.ENI_ACTIONS, ["*"]),
            *args.statements,
        ]
        if args.secrets:
            statements.append(policies.read_secrets([s.arn for s in args.secrets.values()]))
        self.policy = aws.iam.RolePolicy(
            name, role=self.role.id, policy=policies.document(statements), opts=child
        )
        environment: dict[str, pulumi.Input[str]] = dict(args.environment)
        if args.secrets:
            environment[env_name("aws_secrets")] = pulumi.Output.json_dumps(
                {env: ref.ref() for env, ref in sorted(args.secrets.items())}
            )
        self.function = aws.lambda_.Function(
            name,
            name=name,
            description=args.description,
            role=self.role.arn,
            runtime=args.runtime,
            architectures=[args.architecture],
            handler=args.handler,
            code=pulumi.FileArchive(str(args.archive)),
            timeout=args.timeout_s,
            memory_size=args.memory_mb,
            environment={"variables": environment},
            vpc_config={
                "subnet_ids": [s.id for s in args.network.app_subnets],
                "security_group_ids": [args.network.functions_sg.id],
            },
            logging_config={"log_format": "JSON", "log_group": self.log_group.name},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.policy, self.log_group]),
        )
        self.register_outputs({"arn": self.function.arn, "name": self.function.name})


class HttpApi(pulumi.ComponentResource):
    """One API Gateway HTTP API in front of every HTTP function."""

    def __init__(
        self, name: str, log_retention_days: int, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:HttpApi", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.api = aws.apigatewayv2.Api(name, protocol_type="HTTP", opts=child)
        access_logs = aws.cloudwatch.LogGroup(
            f"{name}-access", retention_in_days=log_retention_days, opts=child
        )
        aws.apigatewayv2.Stage(
            name,
            api_id=self.api.id,
            name="$default",
            auto_deploy=True,
            default_route_settings={"throttling_burst_limit": 500, "throttling_rate_limit": 1000},
            access_log_settings={
                "destination_arn": access_logs.arn,
                "format": json.dumps(
                    {
                        "requestId": "$context.requestId",
                        "routeKey": "$context.routeKey",
                        "status": "$context.status",
                        "latencyMs": "$context.responseLatency",
                        "integrationError": "$context.integrationErrorMessage",
                    }
                ),
            },
            opts=child,
        )
        self.url: pulumi.Output[str] = self.api.api_endpoint
        self._healthz = False
        self.register_outputs({"url": self.url})

    def serve(
        self,
        fn: Function,
        trigger: HttpRoute,
        target: aws.lambda_.Function,
        after: Sequence[pulumi.Resource] = (),
    ) -> None:
        """Route the function's routes (and the API's /healthz, once) to its Lambda."""
        child = pulumi.ResourceOptions(parent=self)
        waits = pulumi.ResourceOptions(parent=self, depends_on=list(after))
        integration = aws.apigatewayv2.Integration(
            fn.name,
            api_id=self.api.id,
            integration_type="AWS_PROXY",
            integration_uri=target.arn,
            integration_method="POST",
            payload_format_version="2.0",
            timeout_milliseconds=HTTP_TIMEOUT_S * 1000,
            opts=child,
        )
        routes = [f"{method} {path}" for method, path in trigger.parsed()]
        if not self._healthz:
            # Every HTTP surface answers /healthz; the API's is the first HTTP function's.
            routes.append("GET /healthz")
            self._healthz = True
        for i, route in enumerate(routes):
            aws.apigatewayv2.Route(
                f"{fn.name}-{i}",
                api_id=self.api.id,
                route_key=route,
                target=pulumi.Output.concat("integrations/", integration.id),
                opts=waits,
            )
        aws.lambda_.Permission(
            f"{fn.name}-api",
            action="lambda:InvokeFunction",
            function=target.name,
            principal="apigateway.amazonaws.com",
            source_arn=pulumi.Output.concat(self.api.execution_arn, "/*/*"),
            opts=child,
        )


@dataclass(frozen=True, slots=True)
class FunctionsArgs:
    """The registry's functions and what their Lambdas and triggers are wired to."""

    functions: Sequence[Function]
    name_prefix: str
    network: Network
    artifacts_dir: Path
    architecture: str
    runtime: str
    log_retention_days: int
    environment: Mapping[str, pulumi.Input[str]]
    secrets: Mapping[str, SecretRef]
    http_secrets: Mapping[str, SecretRef]
    kafka_cluster_arn: pulumi.Input[str]
    kafka_pollers: int
    bridge: BridgeArgs
    # Triggers start only after these (provisioning: migrations, topics, the app role).
    after: Sequence[pulumi.Resource] = ()


def lambda_timeout(fn: Function) -> int:
    """The Lambda timeout for a function: its own bound plus what its trigger needs around it."""
    trigger = fn.trigger
    match trigger:
        case HttpRoute():
            return min(HTTP_TIMEOUT_S, math.ceil(fn.timeout_s))
        case RedisStream() | KafkaTopic() | Schedule():
            return min(900, math.ceil(fn.timeout_s) + BATCH_MARGIN_S)
        case _:
            assert_never(trigger)


def schedule_expression(trigger: Schedule) -> str:
    """An EventBridge rate; EventBridge counts in whole minutes."""
    minutes = max(1, math.ceil(trigger.every_s / 60))
    if minutes * 60 != trigger.every_s:
        pulumi.log.warn(f"schedule every {trigger.every_s} s runs every {minutes} min on AWS")
    return f"rate({minutes} minute{'s' if minutes > 1 else ''})"


class Functions(pulumi.ComponentResource):
    """Every registry function as a Lambda with the trigger its declaration names."""

    def __init__(
        self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:Functions", name, None, opts)
        self.args = args
        self.lambdas: dict[str, VpcLambda] = {}
        self.bridges: dict[str, StreamBridge] = {}
        self.api: HttpApi | None = None
        for fn in args.functions:
            self._deploy(fn)
        self.history_url: pulumi.Output[str] = (
            self.api.url if self.api is not None else pulumi.Output.from_input("")
        )
        self.register_outputs(
            {"lambdas": {n: lam.function.name for n, lam in self.lambdas.items()}}
        )

    def _deploy(self, fn: Function) -> None:
        args = self.args
        name = f"{args.name_prefix}-{fn.name}"
        trigger = fn.trigger
        statements: list[policies.Statement] = []
        secrets = dict(args.secrets)
        match trigger:
            case KafkaTopic():
                # The event source mapping reads the cluster with the function's role.
                statements.append(
                    policies.allow(
                        [
                            "kafka:DescribeCluster",
                            "kafka:DescribeClusterV2",
                            "kafka:GetBootstrapBrokers",
                        ],
                        [args.kafka_cluster_arn],
                    )
                )
            case HttpRoute():
                # HTTP surfaces authenticate their callers.
                secrets.update(args.http_secrets)
            case RedisStream() | Schedule():
                pass
            case _:
                assert_never(trigger)
        lam = VpcLambda(
            name,
            LambdaArgs(
                archive=args.artifacts_dir / f"{fn.name}.zip",
                handler=HANDLER,
                timeout_s=lambda_timeout(fn),
                memory_mb=fn.memory_mb,
                architecture=args.architecture,
                runtime=args.runtime,
                log_retention_days=args.log_retention_days,
                network=args.network,
                environment={**args.environment, env_name("function"): fn.name},
                secrets=secrets,
                statements=statements,
                description=f"{fn.description} ({describe(trigger)})".strip(),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.lambdas[fn.name] = lam
        self._trigger(fn, name, lam)

    def _trigger(self, fn: Function, name: str, lam: VpcLambda) -> None:
        args = self.args
        child = pulumi.ResourceOptions(parent=self)
        # A consumer that starts before migrations and topics exist fails its first batches.
        waits = pulumi.ResourceOptions(parent=self, depends_on=[lam, *args.after])
        trigger = fn.trigger
        match trigger:
            case KafkaTopic():
                aws.lambda_.EventSourceMapping(
                    name,
                    function_name=lam.function.arn,
                    event_source_arn=args.kafka_cluster_arn,
                    topics=[trigger.topic],
                    starting_position="TRIM_HORIZON",
                    batch_size=min(10_000, trigger.batch_size),
                    maximum_batching_window_in_seconds=math.ceil(trigger.max_wait_ms / 1000),
                    amazon_managed_kafka_event_source_config={"consumer_group_id": trigger.group},
                    # Provisioned pollers are what enables partial-batch replies and bounded
                    # retries for Kafka sources.
                    provisioned_poller_config={
                        "minimum_pollers": args.kafka_pollers,
                        "maximum_pollers": max(args.kafka_pollers, 4),
                    },
                    function_response_types=["ReportBatchItemFailures"],
                    maximum_retry_attempts=trigger.max_attempts - 1,
                    destination_config=(
                        {"on_failure": {"destination_arn": f"kafka://{trigger.dead_letter}"}}
                        if trigger.dead_letter
                        else None
                    ),
                    opts=waits,
                )
            case HttpRoute():
                if self.api is None:
                    self.api = HttpApi(
                        f"{args.name_prefix}-http", args.log_retention_days, opts=child
                    )
                self.api.serve(fn, trigger, lam.function, args.after)
            case Schedule():
                rule = aws.cloudwatch.EventRule(
                    name, schedule_expression=schedule_expression(trigger), opts=child
                )
                aws.cloudwatch.EventTarget(name, rule=rule.name, arn=lam.function.arn, opts=waits)
                aws.lambda_.Permission(
                    f"{name}-schedule",
                    action="lambda:InvokeFunction",
                    function=lam.function.name,
                    principal="events.amazonaws.com",
                    source_arn=rule.arn,
                    opts=child,
                )
            case RedisStream():
                self.bridges[fn.name] = StreamBridge(
                    f"{name}-bridge", fn, lam.function, args.bridge, opts=child, after=args.after
                )
            case _:
                assert_never(trigger)


class ArchiveMismatch(ValueError):
    """An archive was built for another architecture or Python than the stack runs."""


def check_archives(
    artifacts_dir: Path, names: Sequence[str], architecture: str, runtime: str
) -> list[str]:
    """Raise ArchiveMismatch for an archive unlike the stack; return the missing ones."""
    manifest_path = artifacts_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    python = runtime.removeprefix("python")
    rebuild = f"python -m functions.aws.package --arch {architecture} --python {python}"
    missing: list[str] = []
    problems: list[str] = []
    for name in names:
        archive = artifacts_dir / f"{name}.zip"
        if not archive.exists():
            missing.append(name)
            continue
        entry = manifest.get(name)
        if entry is None:
            problems.append(f"{archive.name} is not in {manifest_path}")
            continue
        if entry.get("arch") != architecture:
            problems.append(f"{archive.name} is built for {entry.get('arch')}, not {architecture}")
        if entry.get("python") != python:
            problems.append(
                f"{archive.name} is built for Python {entry.get('python')}, not {python}"
            )
        if entry.get("sha256") != hashlib.sha256(archive.read_bytes()).hexdigest():
            problems.append(f"{archive.name} changed after it was packaged")
    if problems:
        raise ArchiveMismatch(
            "Lambda archives do not match the stack (lambdaArchitecture "
            f"{architecture}, runtime {runtime}): {'; '.join(problems)}. Rebuild them: {rebuild}"
        )
    return missing
